import { Flags } from '@oclif/core';
import { isRegistrySpec, parseReference, pushLayoutImages, resolveManifestDescriptor, RegistryArtifactError, type PushResult } from '../oci/registry/index.js';

/** The push flags of `build` and `buildkit`, declared once. */
export const pushFlags = {
  push: Flags.string({
    description: 'after the build, push the result (metadata image, blobs, config, manifest; an index for several images) to this registry reference, docker://HOST[:PORT]/REPO:TAG; blobs the registry has are not sent again',
    helpValue: 'docker://HOST/REPO:TAG',
  }),
  'push-mount-from': Flags.string({
    description: 'with --push: another repository of the same registry that may hold some blobs already (e.g. where the base image\'s conversion was pushed); they are mounted instead of uploaded (repeatable)',
    multiple: true,
    dependsOn: ['push'],
    helpValue: 'REPO',
  }),
  attach: Flags.boolean({
    description: 'with --push and a docker:// source in the same repository: attach the result to the source image as an OCI 1.1 referrer (manifest subject; the sha256-HEX referrers tag on registries without the referrers API)',
    dependsOn: ['push'],
  }),
};

/**
 * Pushes what a build wrote to its output layout, when `--push` asks for it. With `--attach`, the
 * subject is what the (single, docker://) source names, which must be in the target's repository:
 * referrers are per repository.
 */
export async function pushBuildResult(
  flags: { push?: string; 'push-mount-from'?: string[]; attach?: boolean },
  sources: readonly string[],
  layoutDir: string,
  names: readonly string[],
  signal: AbortSignal,
): Promise<PushResult | undefined> {
  if (flags.push === undefined) return undefined;
  const target = parseReference(flags.push);
  const mountFrom = [...(flags['push-mount-from'] ?? [])];
  // A source in the same registry may hold blobs; its repository is a free mount candidate.
  for (const source of sources) {
    if (!isRegistrySpec(source)) continue;
    const reference = parseReference(source);
    if (reference.registry === target.registry) mountFrom.push(reference.repository);
  }
  let subject;
  if (flags.attach === true) {
    const source = sources.length === 1 && isRegistrySpec(sources[0]!) ? parseReference(sources[0]!) : undefined;
    if (source === undefined) throw new RegistryArtifactError(target.text, '--attach needs exactly one docker:// source (the image the result is attached to)');
    if (source.registry !== target.registry || source.repository !== target.repository) {
      throw new RegistryArtifactError(target.text, `--attach: referrers live in the subject's repository; push to ${source.registry}/${source.repository}:TAG`);
    }
    subject = await resolveManifestDescriptor(sources[0]!, { signal });
  }
  return pushLayoutImages(layoutDir, names, flags.push, { mountFrom: [...new Set(mountFrom)], signal, ...(subject === undefined ? {} : { subject }) });
}

export function pushSummary(push: PushResult): string {
  const count = (action: string) => push.blobs.filter((blob) => blob.action === action).length;
  const referrers = push.referrers === undefined ? '' : push.referrers.api ? '; attached (referrers API)' : `; attached (referrers tag ${push.referrers.tag})`;
  return `pushed ${push.reference} (${push.manifestDigest}): ${count('uploaded')} blob(s) uploaded (${push.uploadedBytes} bytes), ${count('present')} already present, ${count('mounted')} mounted${referrers}`;
}
