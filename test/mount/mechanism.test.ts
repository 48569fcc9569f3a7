import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MechanismUnavailableError,
  chooseMechanism,
  erofsMountArgv,
  factsNeeded,
  overlayMountArgv,
  parseMountinfo,
  hasOption,
  type Verdict,
} from '../../src/mount/index.js';

/**
 * The mechanism decision and the mount(8) arguments are pure, so every path is tested here,
 * including Linux 7.0's inode_share, which the 6.18 kernels of our machines cannot run: its
 * decision and its exact mount arguments are all we can check for it.
 */

const yes = (reason: string): Verdict => ({ available: true, reason });
const no = (reason: string): Verdict => ({ available: false, reason });

test('auto picks inode_share when the kernel kept the option on the probe mount', () => {
  const decision = chooseMechanism('auto', { inodeShare: yes('kept'), overlay: yes('works') });
  assert.equal(decision.mechanism, 'inode-share');
  assert.deepEqual(decision.warnings, []);
});

test('auto needs no overlay probe once inode_share is available', () => {
  assert.equal(chooseMechanism('auto', { inodeShare: yes('kept') }).mechanism, 'inode-share');
});

test('auto falls back to overlay object indexes without inode_share (Linux 6.5 to 6.x)', () => {
  const decision = chooseMechanism('auto', { inodeShare: no("erofs: Unknown parameter 'inode_share'"), overlay: yes('data-only layers work') });
  assert.equal(decision.mechanism, 'overlay');
  assert.match(decision.reason, /Unknown parameter/);
  assert.deepEqual(decision.warnings, []);
});

test('auto falls back to plain with a warning that nothing is shared', () => {
  const decision = chooseMechanism('auto', { inodeShare: no('refused'), overlay: no('no data-only layers') });
  assert.equal(decision.mechanism, 'plain');
  assert.equal(decision.warnings.length, 1);
  assert.match(decision.warnings[0]!, /nothing will be shared: inode_share: refused; overlay: no data-only layers/);
});

test('a forced mechanism the kernel lacks is an error naming the reason, never a silent downgrade', () => {
  assert.throws(() => chooseMechanism('inode-share', { inodeShare: no('needs Linux 7.0+') }), (error: unknown) => {
    assert.ok(error instanceof MechanismUnavailableError);
    assert.equal(error.code, 'ERR_MECHANISM_UNAVAILABLE');
    assert.match(error.message, /^mechanism inode-share is not available here: needs Linux 7\.0\+; use --mechanism auto/);
    return true;
  });
  assert.throws(() => chooseMechanism('overlay', { overlay: no('old kernel') }), MechanismUnavailableError);
  assert.equal(chooseMechanism('inode-share', { inodeShare: yes('kept') }).mechanism, 'inode-share');
  assert.equal(chooseMechanism('overlay', { overlay: yes('ok') }).mechanism, 'overlay');
});

test('--no-share and --mechanism plain need no probes', () => {
  assert.deepEqual(factsNeeded('auto', true), []);
  assert.deepEqual(factsNeeded('plain', false), []);
  assert.deepEqual(factsNeeded('auto', false), ['inodeShare', 'overlay']);
  assert.deepEqual(factsNeeded('inode-share', false), ['inodeShare']);
  assert.deepEqual(factsNeeded('overlay', false), ['overlay']);
  assert.equal(chooseMechanism('auto', {}, { noShare: true }).mechanism, 'plain');
  const forced = chooseMechanism('plain', {});
  assert.equal(forced.mechanism, 'plain');
  assert.match(forced.warnings[0]!, /shares no page cache/);
});

test('inode_share mount arguments (Linux 7.0+): devices in table order, then inode_share and the trusted domain', () => {
  assert.deepEqual(erofsMountArgv({ source: '/dev/loop9', target: '/mnt/v1', devices: ['/dev/loop3', '/dev/loop4'], inodeShareDomain: 'mkfs-erofs-ts' }), [
    '-t',
    'erofs',
    '-o',
    'ro,device=/dev/loop3,device=/dev/loop4,inode_share,domain_id=mkfs-erofs-ts',
    '/dev/loop9',
    '/mnt/v1',
  ]);
});

test('plain EROFS mount arguments carry no sharing options', () => {
  assert.deepEqual(erofsMountArgv({ source: '/dev/loop9', target: '/mnt/x', devices: ['/dev/loop3'] }), ['-t', 'erofs', '-o', 'ro,device=/dev/loop3', '/dev/loop9', '/mnt/x']);
  assert.deepEqual(erofsMountArgv({ source: '/dev/loop9', target: '/mnt/x', devices: [] }), ['-t', 'erofs', '-o', 'ro', '/dev/loop9', '/mnt/x']);
});

test('overlay arguments: the metadata layer, then object indexes as data-only layers after ::', () => {
  assert.deepEqual(overlayMountArgv('/run/x/mounts/1/meta', ['/run/x/objects/aa', '/run/x/objects/bb'], '/mnt/v1'), [
    '-t',
    'overlay',
    '-o',
    'ro,lowerdir=/run/x/mounts/1/meta::/run/x/objects/aa::/run/x/objects/bb,metacopy=on,redirect_dir=follow',
    'mkfs-erofs-ts',
    '/mnt/v1',
  ]);
  assert.throws(() => overlayMountArgv('/run/a:b/meta', [], '/mnt'), /separator/);
});

test('mountinfo: escaped paths, optional fields, and the super options the inode_share probe reads', () => {
  const text = [
    '42 27 7:3 / /run/mkfs-erofs-ts/objects/ab ro,relatime shared:5 - erofs /dev/loop3 ro,user_xattr,acl,cache_strategy=readaround',
    '48 27 0:39 / /mnt/with\\040space ro,relatime - overlay mkfs-erofs-ts ro,lowerdir=/a::/b,redirect_dir=on,metacopy=on',
    '50 27 7:9 / /mnt/v2 ro,relatime - erofs /dev/loop9 ro,user_xattr,acl,inode_share,domain_id=mkfs-erofs-ts',
    '',
  ].join('\n');
  const entries = parseMountinfo(text);
  assert.equal(entries.length, 3);
  assert.equal(entries[0]!.target, '/run/mkfs-erofs-ts/objects/ab');
  assert.equal(entries[0]!.fstype, 'erofs');
  assert.equal(entries[1]!.target, '/mnt/with space');
  assert.equal(entries[1]!.source, 'mkfs-erofs-ts');
  assert.equal(hasOption(entries[0]!.superOptions, 'inode_share'), false);
  assert.equal(hasOption(entries[2]!.superOptions, 'inode_share'), true);
  assert.equal(hasOption(entries[2]!.superOptions, 'domain_id'), true);
});
