// Free page reporting, read beside the NBD rows: the guest kernel hands
// memory freed in the guest back to the hypervisor (virtio-balloon's free
// page reporting), and the next touch of such a page faults in the host.
// A first touch on tmpfs writes a GiB of storage pages that are new to the
// guest, so when the pages freed by the previous snapshot's storage went
// back to the host meanwhile, the copy pays a host fault per page: the
// collapses of bench/README.md, "Free page reporting".
//
// The counter is this machine's kernel's (its page_reporting module has
// `reported_kib`; upstream has none). Where it is missing nothing is
// recorded and the report says nothing.

import { readFileSync } from 'node:fs';

const PARAMETERS_DIR = '/sys/module/page_reporting/parameters';
const KiB = 1024;

function readParameter(name: string): string | undefined {
  try {
    return readFileSync(`${PARAMETERS_DIR}/${name}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function reportedKib(): number | undefined {
  const text = readParameter('reported_kib');
  const kib = text === undefined ? Number.NaN : Number(text);
  return Number.isFinite(kib) ? kib : undefined;
}

/** The knobs that decide how soon freed memory goes back: for the report's line. */
export function reportingSettings(): string | undefined {
  if (reportedKib() === undefined) return undefined;
  return ['min_free_ms', 'page_reporting_order'].map((name) => `${name} ${readParameter(name) ?? '?'}`).join(', ');
}

/** MiB reported to the hypervisor between one call and the next (undefined where the counter is missing). */
export class ReportingMeter {
  private last = reportedKib();

  sinceLast(): number | undefined {
    const now = reportedKib();
    const previous = this.last;
    this.last = now;
    return now === undefined || previous === undefined ? undefined : (now - previous) / KiB;
  }
}
