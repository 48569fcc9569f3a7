// CPU time of this process's main thread alone, from /proc (worker and libuv threads are not in it), for
// the bench scripts that measure what a conversion costs its busiest thread.
import { readFileSync } from 'node:fs';

/** utime + stime of the main thread in ms (clock ticks of 10 ms). */
export function mainThreadCpuMs() {
  const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
