import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes `bytes` to `finalPath` through a temporary name in the same directory, fsynced, then
 * renamed: a reader (or a crash) never sees a partial file under the final name.
 */
export async function writeFileAtomically(finalPath: string, bytes: Uint8Array): Promise<void> {
  const tempPath = path.join(path.dirname(finalPath), `.tmp-${path.basename(finalPath)}-${process.pid}-${randomBytes(6).toString('hex')}`);
  const file = await open(tempPath, 'wx');
  try {
    await file.writeFile(bytes);
    await file.sync();
  } catch (error) {
    await file.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    throw error;
  }
  await file.close();
  await rename(tempPath, finalPath).catch(async (error: unknown) => {
    await rm(tempPath, { force: true });
    throw error;
  });
}
