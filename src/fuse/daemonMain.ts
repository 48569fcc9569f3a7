// Entry point of the FUSE daemon process (started detached by `erofs mount --fuse`): argv[2] is the runtime directory.
import { runDaemon } from './daemon.js';

const runtimeDir = process.argv[2];
if (runtimeDir === undefined) {
  process.stderr.write('usage: daemonMain.js RUNTIME_DIR\n');
  process.exit(2);
}
runDaemon(runtimeDir).catch((e: unknown) => {
  process.stderr.write(`daemon failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
