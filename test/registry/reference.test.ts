import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseChallenge } from '../../src/oci/registry/auth.js';
import { InvalidReferenceError } from '../../src/oci/registry/errors.js';
import { parseReference, registryBaseUrl, usesPlainHttp } from '../../src/oci/registry/reference.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

test('reference: docker://HOST[:PORT]/REPO[:TAG][@DIGEST], with docker\'s rules for Docker Hub names', () => {
  const cases: Array<[string, { registry: string; repository: string; tag?: string; digest?: string; text: string }]> = [
    ['docker://127.0.0.1:5000/app:v1', { registry: '127.0.0.1:5000', repository: 'app', tag: 'v1', text: '127.0.0.1:5000/app:v1' }],
    ['docker://localhost/team/app', { registry: 'localhost', repository: 'team/app', tag: 'latest', text: 'localhost/team/app:latest' }],
    ['docker://registry.example.com/a/b/c:1.0-rc_1', { registry: 'registry.example.com', repository: 'a/b/c', tag: '1.0-rc_1', text: 'registry.example.com/a/b/c:1.0-rc_1' }],
    [`docker://registry.example.com/app@${DIGEST}`, { registry: 'registry.example.com', repository: 'app', digest: DIGEST, text: `registry.example.com/app@${DIGEST}` }],
    [`docker://registry.example.com/app:v1@${DIGEST}`, { registry: 'registry.example.com', repository: 'app', tag: 'v1', digest: DIGEST, text: `registry.example.com/app@${DIGEST}` }],
    ['docker://debian', { registry: 'docker.io', repository: 'library/debian', tag: 'latest', text: 'docker.io/library/debian:latest' }],
    ['docker://team/app:2', { registry: 'docker.io', repository: 'team/app', tag: '2', text: 'docker.io/team/app:2' }],
    ['docker://[::1]:5000/app:v1', { registry: '[::1]:5000', repository: 'app', tag: 'v1', text: '[::1]:5000/app:v1' }],
  ];
  for (const [spec, expected] of cases) assert.deepEqual(parseReference(spec), expected, spec);
  for (const bad of ['docker://', 'docker://127.0.0.1:5000/App:v1', 'docker://host.example/app:bad/tag:x', 'docker://host.example/app@sha256:12', 'docker://host.example/app:-x', 'docker://host.example/a//b']) {
    assert.throws(() => parseReference(bad), InvalidReferenceError, bad);
  }
});

test('reference: plain HTTP for loopback and EROFS_INSECURE_REGISTRIES, HTTPS otherwise; Docker Hub at registry-1', () => {
  assert.equal(usesPlainHttp('127.0.0.1:5000', {}), true);
  assert.equal(usesPlainHttp('127.8.9.10', {}), true);
  assert.equal(usesPlainHttp('localhost:5000', {}), true);
  assert.equal(usesPlainHttp('[::1]:5000', {}), true);
  assert.equal(usesPlainHttp('registry.lan:5000', {}), false);
  assert.equal(usesPlainHttp('registry.lan:5000', { EROFS_INSECURE_REGISTRIES: 'other, registry.lan:5000' }), true);
  assert.equal(usesPlainHttp('registry.lan', { EROFS_INSECURE_REGISTRIES: 'registry.lan' }), true);
  assert.equal(registryBaseUrl(parseReference('docker://debian'), {}), 'https://registry-1.docker.io');
  assert.equal(registryBaseUrl(parseReference('docker://127.0.0.1:5000/a'), {}), 'http://127.0.0.1:5000');
});

test('auth: WWW-Authenticate challenges', () => {
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/debian:pull' },
  });
  assert.deepEqual(parseChallenge('Basic realm="basic-realm"'), { scheme: 'basic', params: { realm: 'basic-realm' } });
  assert.deepEqual(parseChallenge('Bearer realm=https://h/t, error="insufficient_scope"'), { scheme: 'bearer', params: { realm: 'https://h/t', error: 'insufficient_scope' } });
  assert.equal(parseChallenge(''), undefined);
});
