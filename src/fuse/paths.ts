import { join } from 'node:path';

/** Where the FUSE daemon keeps its root mount, control socket, log and the mount records. */
export interface FusePaths {
  dir: string;
  root: string;
  socket: string;
  log: string;
  state: string;
  lock: string;
  pid: string;
}

export function fusePaths(runtimeDir: string): FusePaths {
  const dir = join(runtimeDir, 'fuse');
  return {
    dir,
    root: join(dir, 'root'),
    socket: join(dir, 'daemon.sock'),
    log: join(dir, 'daemon.log'),
    state: join(dir, 'state.json'),
    lock: join(dir, 'lock'),
    pid: join(dir, 'daemon.pid'),
  };
}

/** Mount options of the FUSE root: our inode numbers, permission checks by the kernel from our modes, read-only. */
export function fuseMountOptions(fd: number): string {
  return [`fd=${fd}`, 'rootmode=40000', 'user_id=0', 'group_id=0', 'allow_other', 'default_permissions', 'ro', 'max_read=1048576'].join(',');
}

export const FUSE_SOURCE = 'erofs-fuse';
