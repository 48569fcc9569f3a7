import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access, chmod, chown, link, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCommand, run, runChecked, tail, type RunResult } from '../helpers/exec.js';
import { withKernelMount } from '../helpers/kernel.js';
import { realImages } from '../helpers/realImages.js';
import { assertTreesEqual, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { DOCKER, DOCKERD, mountsBelow, processesNaming, withDockerd, type Dockerd } from './dockerd.js';
import { writeBuildkitStyleOciArchive } from './ociArchive.js';
import { smallTar, writeLayout } from '../oci/helpers.js';

const CLI = join(process.cwd(), 'bin', 'run.js');
const TAG = 'erofs-buildkit-test:latest';

/** A pipe through bash (pipefail: a failing producer fails the pipe too); every path here is shell-safe. */
function pipe(command: string): Promise<RunResult> {
  return run('bash', ['-o', 'pipefail', '-c', command]);
}

async function pipeChecked(command: string): Promise<RunResult> {
  const r = await pipe(command);
  if (r.code !== 0) throw new Error(`${command} exited ${r.code}:\n${tail(r.output)}`);
  return r;
}

/** Every file below `dir` (recursively); a missing directory has none. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => join(e.parentPath, e.name));
}

/**
 * A small root filesystem exercising what a layer carries: sizes around the chunk size, an empty
 * file, a hardlink, a symlink, setuid, other owners, an empty directory.
 */
async function makeRootfs(root: string): Promise<void> {
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(join(root, 'usr', 'bin'), { recursive: true });
  await mkdir(join(root, 'var', 'empty'), { recursive: true });
  await mkdir(join(root, 'home', 'user'), { recursive: true });
  await writeFile(join(root, 'etc', 'hostname'), 'buildkit-test\n');
  await symlink('hostname', join(root, 'etc', 'name-link'));
  await link(join(root, 'etc', 'hostname'), join(root, 'etc', 'hostname-hardlink'));
  await writeFile(join(root, 'etc', 'empty'), '');
  const random = randomBytes(1 << 20);
  await writeFile(join(root, 'usr', 'bin', 'tool'), Buffer.concat([random, random, randomBytes(12345)]));
  await chmod(join(root, 'usr', 'bin', 'tool'), 0o4755);
  await writeFile(join(root, 'home', 'user', 'notes'), 'owned by 1000:1000\n');
  await chown(join(root, 'home', 'user', 'notes'), 1000, 1000);
  await chown(join(root, 'home', 'user'), 1000, 1000);
}

/** The tree of an image as docker has it: `docker save`, each layer unpacked in order by GNU tar. */
async function dockerSaveTree(dockerd: Dockerd, work: string, tag: string): Promise<{ savedDir: string; tree: string }> {
  const savedDir = join(work, 'saved');
  const tree = join(work, 'expected');
  await mkdir(savedDir);
  await mkdir(tree);
  await pipeChecked(`${DOCKER} -H ${dockerd.host} save ${tag} | tar -x -C ${savedDir}`);
  const [entry] = JSON.parse(await readFile(join(savedDir, 'manifest.json'), 'utf8')) as { Layers: string[] }[];
  assert.ok(entry !== undefined && entry.Layers.length > 0, 'docker save lists an image with layers');
  // FROM scratch + ADD only: no whiteouts, so plain extraction in order is the image's tree.
  for (const layer of entry.Layers) await runChecked('tar', ['-x', '-p', '--numeric-owner', '--xattrs', '--xattrs-include=*', '-f', join(savedDir, layer), '-C', tree]);
  return { savedDir, tree };
}

/** The kernel mount of a result named in OUTDIR/NAME.report.json. */
async function mountedTree(outDir: string, name: string): Promise<TreeSnapshot> {
  const report = JSON.parse(await readFile(join(outDir, `${name}.report.json`), 'utf8')) as { metadataImage: string; blobs: string[] };
  return withKernelMount(report.metadataImage, report.blobs, (mountpoint) => snapshotTree(mountpoint));
}

/**
 * The root directory's own mtime is the unpacking's, not the image's: layers have no "./" entry.
 * The plain kernel mount shows the builder's page cache sharing markers (trusted.overlay.metacopy
 * and .redirect, which an overlay mount hides): they are ours, not the image's.
 */
const OUR_MARKERS = ['xattrs.trusted.overlay.metacopy', 'xattrs.trusted.overlay.redirect'];
const ignoreRootMtime = { ignore: (path: string, field: string) => (path === '.' && field === 'mtime') || OUR_MARKERS.includes(field) };

/**
 * Docker's two exports of one image disagree by a second on sub-second mtimes (one rounds, the
 * other truncates, as Go's archive/tar writers do for non-PAX headers): a difference of at most 1 s is
 * the exporter's, not the conversion's.
 */
function ignoreExporterRounding(expected: TreeSnapshot, actual: TreeSnapshot) {
  const seconds = (mtime: string | undefined) => Number(mtime?.split('.')[0]);
  return {
    ignore: (path: string, field: string) =>
      ignoreRootMtime.ignore(path, field) || (field === 'mtime' && Math.abs(seconds(expected.get(path)?.mtime) - seconds(actual.get(path)?.mtime)) <= 1),
  };
}

interface LayoutManifest {
  layers: { mediaType: string; digest: string; annotations?: Record<string, string> }[];
}

describe('buildkit: a real BuildKit (Debian docker.io) piped into the hook', () => {
  let dockerd: Dockerd;
  let stopDockerd: () => Promise<void>;
  let work: string;
  let expected: TreeSnapshot;
  let savedDir: string;

  before(async () => {
    await access(DOCKERD).catch(() => assert.fail(`${DOCKERD} is missing: run scripts/setup.sh (installs Debian's docker.io)`));
    work = await mkdtemp(join(tmpdir(), 'erofs-test-buildkit-'));
    const context = join(work, 'context');
    await makeRootfs(join(context, 'root'));
    await runChecked('tar', ['-C', join(context, 'root'), '--numeric-owner', '-cf', join(context, 'rootfs.tar'), '.']);
    // A second layer replacing a file and adding one: the hook must merge layers as docker does.
    await mkdir(join(context, 'extra', 'etc'), { recursive: true });
    await writeFile(join(context, 'extra', 'etc', 'hostname'), 'replaced by layer 2\n');
    await writeFile(join(context, 'extra', 'etc', 'added'), 'layer 2\n');
    await runChecked('tar', ['-C', join(context, 'extra'), '--numeric-owner', '-cf', join(context, 'extra.tar'), '.']);
    await writeFile(join(context, 'Dockerfile'), 'FROM scratch\nADD rootfs.tar /\nADD extra.tar /\n');
    // withDockerd wraps a body; the suite's tests run between before and after, so its body waits here.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let ready!: (d: Dockerd) => void;
    let failed!: (e: unknown) => void;
    const started = new Promise<Dockerd>((resolve, reject) => ((ready = resolve), (failed = reject)));
    const running = withDockerd(async (d) => {
      ready(d);
      await released;
    }).catch((error: unknown) => failed(error));
    stopDockerd = async () => {
      release();
      await running;
    };
    dockerd = await started;
    const built = await pipe(`DOCKER_BUILDKIT=1 ${DOCKER} -H ${dockerd.host} build -q -t ${TAG} ${context}`);
    assert.equal(built.code, 0, `docker build failed:\n${tail(built.output)}`);
    const saved = await dockerSaveTree(dockerd, work, TAG);
    savedDir = saved.savedDir;
    expected = await snapshotTree(saved.tree);
  });

  after(async () => {
    const dir = dockerd?.dir;
    await stopDockerd?.();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
    if (dir !== undefined) {
      assert.deepEqual(await mountsBelow(dir), [], 'dockerd left mounts behind');
      assert.deepEqual(await processesNaming(dir), [], 'dockerd left processes behind');
    }
  });

  test('docker build --output type=tar,dest=- | buildkit -o OUT mounts as the image built, streamed (no temporary copy)', async () => {
    const out = join(work, 'out-tar');
    // TMPDIR names no directory: the root filesystem must stream into the conversion, never to a temporary file.
    await pipeChecked(`DOCKER_BUILDKIT=1 ${DOCKER} -H ${dockerd.host} build -o type=tar,dest=- ${join(work, 'context')} | TMPDIR=${join(work, 'no-such-tmp')} node ${CLI} buildkit -o ${out}`);
    assertTreesEqual(expected, await mountedTree(out, 'image'), ignoreRootMtime);
  });

  test('docker save | buildkit -o OUT mounts as the image built (two layers merged)', async () => {
    const out = join(work, 'out-save');
    await pipeChecked(`${DOCKER} -H ${dockerd.host} save ${TAG} | node ${CLI} buildkit -o ${out} --name app`);
    assertTreesEqual(expected, await mountedTree(out, 'app'), ignoreRootMtime);
  });

  test('an OCI tarball (multi-platform index + attestations) converts each platform, or only --platform', async () => {
    const archive = join(work, 'oci.tar');
    await writeBuildkitStyleOciArchive(savedDir, archive);
    const out = join(work, 'out-oci');
    const r = await pipeChecked(`node ${CLI} buildkit -o ${out} < ${archive}`);
    assert.match(r.stdout, /converting each/);
    for (const name of ['image-linux-amd64', 'image-linux-arm64']) assertTreesEqual(expected, await mountedTree(out, name), ignoreRootMtime);
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
    assert.deepEqual(index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']).sort(), ['image-linux-amd64', 'image-linux-arm64']);

    const one = join(work, 'out-oci-arm64');
    await pipeChecked(`node ${CLI} buildkit -o ${one} --platform linux/arm64 < ${archive}`);
    assertTreesEqual(expected, await mountedTree(one, 'image'), ignoreRootMtime);
    const config = JSON.parse(await readFile(join(one, 'image.report.json'), 'utf8')) as { ociLayout: { manifestDigest: string } };
    const manifest = JSON.parse(await readFile(join(one, 'blobs', 'sha256', config.ociLayout.manifestDigest.slice(7)), 'utf8')) as { config: { digest: string } };
    const imageConfig = JSON.parse(await readFile(join(one, 'blobs', 'sha256', manifest.config.digest.slice(7)), 'utf8')) as { architecture: string };
    assert.equal(imageConfig.architecture, 'arm64');

    const missing = await pipe(`node ${CLI} buildkit -o ${join(work, 'out-oci-s390x')} --platform linux/s390x < ${archive}`);
    assertOneLineError(missing, /^mkfs-erofs-ts: error: standard input: no image for platform linux\/s390x .*available: linux\/amd64, linux\/arm64/);
    assert.deepEqual(await filesUnder(join(work, 'out-oci-s390x')), []);
  });

  test('-o - writes a tar of the OCI layout to stdout, whose artifacts mount as the image', async () => {
    const layoutTar = join(work, 'layout.tar');
    const r = await pipeChecked(`DOCKER_BUILDKIT=1 ${DOCKER} -H ${dockerd.host} build -o type=tar,dest=- ${join(work, 'context')} | node ${CLI} buildkit -o - > ${layoutTar}`);
    assert.match(r.stderr, /image image: /, 'the report goes to stderr');
    const layout = join(work, 'layout');
    await mkdir(layout);
    await runChecked('tar', ['-x', '-f', layoutTar, '-C', layout]);
    const members = (await runChecked('tar', ['-t', '-f', layoutTar])).stdout.trim().split('\n');
    assert.ok(members.every((m) => m === 'oci-layout' || m === 'index.json' || m.startsWith('blobs/')), `only the layout is in the tar: ${members.join(' ')}`);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    assert.equal(index.manifests.length, 1);
    const manifest = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as LayoutManifest;
    const blobPath = (digest: string) => join(layout, 'blobs', 'sha256', digest.slice(7));
    const [metadata, ...rest] = manifest.layers;
    assert.equal(metadata?.annotations?.['io.mkfs-erofs-ts.erofs.role'], 'metadata');
    // The devices; the blobs' object indexes (role object-index) follow them and are no devices.
    const devices = rest.filter((layer) => layer.annotations?.['io.mkfs-erofs-ts.erofs.role'] === 'device');
    devices.sort((a, b) => Number(a.annotations?.['io.mkfs-erofs-ts.erofs.device-id']) - Number(b.annotations?.['io.mkfs-erofs-ts.erofs.device-id']));
    const tree = await withKernelMount(blobPath(metadata!.digest), devices.map((d) => blobPath(d.digest)), (mountpoint) => snapshotTree(mountpoint));
    assertTreesEqual(expected, tree, ignoreRootMtime);
  });

  test('a real Debian root filesystem through docker build --output type=tar', async () => {
    const { baseTree } = await realImages();
    const context = join(work, 'debian');
    await mkdir(context);
    await runChecked('tar', ['-C', baseTree, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-cf', join(context, 'rootfs.tar'), '.']);
    await writeFile(join(context, 'Dockerfile'), 'FROM scratch\nADD rootfs.tar /\n');
    await pipeChecked(`DOCKER_BUILDKIT=1 ${DOCKER} -H ${dockerd.host} build -q -t erofs-buildkit-debian ${context}`);
    const sub = join(work, 'debian-work');
    await mkdir(sub);
    const { tree } = await dockerSaveTree(dockerd, sub, 'erofs-buildkit-debian');
    const out = join(work, 'out-debian');
    await pipeChecked(`DOCKER_BUILDKIT=1 ${DOCKER} -H ${dockerd.host} build -o type=tar,dest=- ${context} | node ${CLI} buildkit -o ${out}`);
    const expectedDebian = await snapshotTree(tree);
    const actual = await mountedTree(out, 'image');
    assert.ok(expectedDebian.size > 5000, `a real root filesystem (${expectedDebian.size} entries)`);
    assertTreesEqual(expectedDebian, actual, ignoreExporterRounding(expectedDebian, actual));
  });

  test('a truncated OCI stream is one error line, exit non-zero, and no output (directory or stdout)', async () => {
    const archive = join(work, 'oci-whole.tar');
    await writeBuildkitStyleOciArchive(savedDir, archive);
    const size = (await stat(archive)).size;
    // Cut in the middle of a blob, and cut right before index.json (a clean tar prefix of blobs only).
    for (const [label, keepBytes] of [['mid-blob', Math.floor(size / 2) + 7], ['before index.json', await offsetOf(archive, 'oci-layout')]] as const) {
      const cut = join(work, `oci-cut.tar`);
      await runChecked('cp', [archive, cut]);
      await truncate(cut, keepBytes);
      const out = join(work, 'out-truncated');
      const r = await pipe(`node ${CLI} buildkit -o ${out} < ${cut}`);
      assertOneLineError(r, /^mkfs-erofs-ts: error: standard input: /, label);
      assert.deepEqual(await filesUnder(out), [], `${label}: no partial output`);
      const toStdout = await pipe(`node ${CLI} buildkit -o - < ${cut} | wc -c`);
      assert.equal(toStdout.stdout.trim(), '0', `${label}: nothing on stdout`);
    }
  });
});

describe('buildkit: without a daemon', () => {
  test('a root filesystem tar streams into the conversion (no temporary directory); cut short it is one error line and no output', async () => {
    const work = await mkdtemp(join(tmpdir(), 'erofs-test-buildkit-'));
    try {
      const root = join(work, 'root');
      await makeRootfs(root);
      const tarFile = join(work, 'rootfs.tar');
      await runChecked('tar', ['-C', root, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-cf', tarFile, '.']);
      const noTmp = `TMPDIR=${join(work, 'no-such-tmp')}`;
      const out = join(work, 'out');
      await pipeChecked(`cat ${tarFile} | ${noTmp} node ${CLI} buildkit -o ${out} --name rootfs`);
      assertTreesEqual(await snapshotTree(root), await mountedTree(out, 'rootfs'), ignoreRootMtime);
      // An archive still needs its copy: with no temporary directory it fails, clearly.
      const layout = join(work, 'layout');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: smallTar('archived'), compression: 'gzip' }] }]);
      const archive = join(work, 'oci.tar');
      await runChecked('tar', ['-C', layout, '-cf', archive, 'oci-layout', 'blobs', 'index.json']);
      const refused = await pipe(`${noTmp} node ${CLI} buildkit -o ${join(work, 'out-archive')} < ${archive}`);
      assertOneLineError(refused, /no-such-tmp/);
      const cut = join(work, 'cut.tar');
      await runChecked('cp', [tarFile, cut]);
      await truncate(cut, Math.floor((await stat(tarFile)).size / 2));
      const cutOut = join(work, 'out-cut');
      const r = await pipe(`${noTmp} node ${CLI} buildkit -o ${cutOut} < ${cut}`);
      assertOneLineError(r, /^mkfs-erofs-ts: error: standard input: truncated tar/);
      assert.deepEqual(await filesUnder(cutOut), [], 'no partial output');
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });


  test('garbage and empty stdin: one error line naming standard input, no output', async () => {
    const work = await mkdtemp(join(tmpdir(), 'erofs-test-buildkit-'));
    try {
      const out = join(work, 'out');
      const garbage = await pipe(`head -c 100000 /dev/urandom | node ${CLI} buildkit -o ${out}`);
      assertOneLineError(garbage, /^mkfs-erofs-ts: error: standard input: not an OCI image layout, OCI archive, docker archive or layer tarball/);
      const empty = await pipe(`node ${CLI} buildkit -o ${out} < /dev/null`);
      assertOneLineError(empty, /^mkfs-erofs-ts: error: standard input: empty/);
      const badPlatform = await pipe(`node ${CLI} buildkit -o ${out} --platform linux < /dev/null`);
      assertOneLineError(badPlatform, /--platform: "linux" is not OS\/ARCH/);
      assert.deepEqual(await filesUnder(out), []);
      assert.deepEqual((await readdir(tmpdir())).filter((n) => n.startsWith('mkfs-erofs-ts-buildkit-')), [], 'the spooled input is removed');
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});

function assertOneLineError(result: RunResult, pattern: RegExp, label = ''): void {
  assert.notEqual(result.code, 0, `${label}: exit status must be non-zero`);
  const lines = result.stderr.trim().split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `${label}: expected one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0]!, pattern);
}

/** Byte offset of the tar header of member `name` (GNU tar's block numbers, 512 bytes each). */
async function offsetOf(archive: string, name: string): Promise<number> {
  const r = await runChecked('tar', ['--block-number', '-t', '-f', archive]);
  const line = r.stdout.split('\n').find((l) => l.endsWith(` ${name}`) || l.endsWith(`: ${name}`));
  if (line === undefined) throw new Error(`${formatCommand('tar', ['-t', '-f', archive])}: no member ${name}`);
  return Number(/^block (\d+):/.exec(line)?.[1]) * 512;
}
