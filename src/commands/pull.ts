import { Args, Command, Flags } from '@oclif/core';
import { reportError } from '../cli/errors.js';
import { pullErofsArtifact, type PullResult } from '../oci/registry/index.js';

export default class Pull extends Command {
  static override summary = 'Fetch an EROFS artifact pushed with build --push: NAME.erofs and its blobs, ready for erofs mount.';
  static override description = `REF is docker://HOST[:PORT]/REPO[:TAG][@DIGEST]. Writes OUTDIR/NAME.erofs and OUTDIR/blobs/sha256/HEX (where erofs mount, inspect and the kernel mount command find the blobs). Every blob is checked against its digest; blobs already in OUTDIR are not fetched again; nothing appears under its final name until everything has arrived. Credentials come from the docker config file.`;
  static override examples = ['<%= config.bin %> pull docker://127.0.0.1:5000/app-erofs:v1 -o pulled && <%= config.bin %> mount pulled/app-erofs_v1.erofs /mnt/app'];
  static override enableJsonFlag = true;
  static override args = {
    reference: Args.string({ description: 'the artifact: docker://HOST/REPO:TAG', required: true }),
  };
  static override flags = {
    output: Flags.string({ char: 'o', description: 'output directory (created if missing)', required: true }),
    name: Flags.string({ description: 'metadata image name (NAME.erofs); default: from the reference (app:v1 -> app_v1)' }),
  };

  async run(): Promise<PullResult> {
    const { args, flags } = await this.parse(Pull);
    try {
      const result = await pullErofsArtifact(args.reference, flags.output, flags.name === undefined ? {} : { name: flags.name });
      if (!this.jsonEnabled()) {
        this.log(`pulled ${result.reference} (${result.manifestDigest}): ${result.downloadedBytes} bytes fetched`);
        this.log(`metadata image: ${result.metadataImage}`);
        for (const [i, blob] of result.blobs.entries()) this.log(`blob ${i + 1}:          ${blob}`);
      }
      return result;
    } catch (error) {
      return reportError(this, error);
    }
  }
}
