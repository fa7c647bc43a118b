// Finding the data in a buffer: the runs that are not all zeros, at a
// granularity of ZERO_BLOCK_BYTES. Backup and restore write only those and
// leave the rest a hole of a file they truncated to size, so an empty
// volume costs no space in the backup (and a restored file none either).

/** A page: the smallest hole a filesystem keeps, and cheap to compare. */
export const ZERO_BLOCK_BYTES = 4096;
const ZEROES = Buffer.alloc(ZERO_BLOCK_BYTES);

function isZero(data: Buffer, start: number, end: number): boolean {
  return data.compare(ZEROES, 0, end - start, start, end) === 0;
}

/** [start, end) byte runs of data that hold a non-zero byte, merged, in order. */
export function dataRuns(data: Buffer): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let run_start = -1;
  for (let at = 0; at < data.length; at += ZERO_BLOCK_BYTES) {
    const end = Math.min(data.length, at + ZERO_BLOCK_BYTES);
    if (isZero(data, at, end)) {
      if (run_start >= 0) runs.push([run_start, at]);
      run_start = -1;
    } else if (run_start < 0) {
      run_start = at;
    }
  }
  if (run_start >= 0) runs.push([run_start, data.length]);
  return runs;
}
