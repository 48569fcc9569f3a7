import { readFile } from 'node:fs/promises';

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** Unique id of the mount (first field); a later mount at the same place gets another. */
  mountId: number;
  parentId: number;
  /** "major:minor" of the filesystem. */
  devNumbers: string;
  target: string;
  mountOptions: string;
  fstype: string;
  source: string;
  /** Filesystem-specific options (for erofs: `inode_share,domain_id=...` when the kernel kept them). */
  superOptions: string;
}

/** Undoes the octal escapes (`\040` for a space) that mountinfo uses in paths. */
export function unescapeMountinfoField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses mountinfo text (proc(5)): `id parent maj:min root target opts [optional...] - fstype source superopts`. */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    entries.push({
      mountId: Number(left[0]),
      parentId: Number(left[1]),
      devNumbers: left[2] ?? '',
      target: unescapeMountinfoField(left[4] ?? ''),
      mountOptions: left[5] ?? '',
      fstype: right[0] ?? '',
      source: unescapeMountinfoField(right[1] ?? ''),
      superOptions: right[2] ?? '',
    });
  }
  return entries;
}

export async function readMountinfo(): Promise<MountEntry[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** The mount on top at `target` (the last one listed there), if any. */
export function topMountAt(entries: readonly MountEntry[], target: string): MountEntry | undefined {
  let top: MountEntry | undefined;
  for (const entry of entries) if (entry.target === target) top = entry;
  return top;
}

/** Whether a comma-separated option list holds `name` (alone or as `name=...`). */
export function hasOption(options: string, name: string): boolean {
  return options.split(',').some((o) => o === name || o.startsWith(`${name}=`));
}
