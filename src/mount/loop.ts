import { formatCommand, runTool } from './exec.js';
import { KernelCommandError } from './errors.js';

/** A loop device as `losetup -J -l` reports it. */
export interface LoopDevice {
  device: string;
  /** Absolute path of the backing file; ends with " (deleted)" when the file was removed while attached. */
  backingFile: string;
  autoclear: boolean;
  directIo: boolean;
}

export async function listLoopDevices(): Promise<LoopDevice[]> {
  const r = await runTool('losetup', ['-J', '-l']);
  if (r.code !== 0) throw new KernelCommandError(formatCommand('losetup', ['-J', '-l']), r.stderr);
  // losetup prints nothing at all (not even `{}`) when no loop device is attached.
  if (r.stdout.trim() === '') return [];
  const parsed = JSON.parse(r.stdout) as { loopdevices?: Array<Record<string, unknown>> };
  return (parsed.loopdevices ?? []).map((d) => ({
    device: String(d['name']),
    backingFile: String(d['back-file'] ?? ''),
    autoclear: d['autoclear'] === true || d['autoclear'] === '1',
    directIo: d['dio'] === true || d['dio'] === '1',
  }));
}

/** The first unused loop device (created through /dev/loop-control if needed), without attaching anything. */
export async function findFreeLoopDevice(): Promise<string> {
  const r = await runTool('losetup', ['--find']);
  const device = r.stdout.trim();
  if (r.code !== 0 || !device.startsWith('/dev/')) throw new KernelCommandError('losetup --find', r.stderr || r.stdout);
  return device;
}

/**
 * Attaches `file` read-only to exactly `device`. Direct I/O on: the data is cached once, in the
 * EROFS inode (or the shared object inode) that reads it; a buffered loop device would cache the
 * same bytes a second time in the backing file's page cache (and charge them to the reader's memory
 * cgroup), which both wastes memory and hides what sharing saves. Returns false when another
 * process took the device first (the caller picks another).
 */
export async function attachLoopDevice(device: string, file: string): Promise<boolean> {
  const args = ['--read-only', '--direct-io=on', device, file];
  const r = await runTool('losetup', args);
  if (r.code === 0) return true;
  if (/busy|exists/i.test(r.stderr)) return false;
  throw new KernelCommandError(formatCommand('losetup', args), r.stderr);
}

/**
 * Detaches `device` if it still serves `backingFile` (a device number is reused by the next
 * attach, so a stale record must never detach someone else's device). A device still held by a
 * mount is marked autoclear by the kernel and goes away when released.
 */
export async function detachLoopDevice(device: string, backingFile: string, current?: readonly LoopDevice[]): Promise<void> {
  const devices = current ?? (await listLoopDevices());
  const entry = devices.find((d) => d.device === device);
  if (entry === undefined || !sameBackingFile(entry.backingFile, backingFile)) return;
  const r = await runTool('losetup', ['--detach', device]);
  // ENXIO: detached meanwhile (autoclear); that is the state we want.
  if (r.code !== 0 && !/No such device/i.test(r.stderr)) throw new KernelCommandError(formatCommand('losetup', ['--detach', device]), r.stderr);
}

export function sameBackingFile(reported: string, file: string): boolean {
  return reported === file || reported === `${file} (deleted)`;
}
