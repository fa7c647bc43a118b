// The security settings of one NBD server, as its connections see them:
// the TLS mode, the credentials of the moment (replaced whole by reload(),
// which SIGHUP triggers through the daemon), the authorisation rules, and
// the log of refusals, one line per client, export and reason however often
// the client retries.
//
// Also the rule that keeps the network out by default: a TCP listener on an
// address that is not loopback needs TLS required, or the explicit
// `insecure` (--nbd-insecure), which is then warned about at every start.

import net from 'node:net';
import { UblksnapError } from '../../shared/errors';
import { AccessPolicy, type AccessRule } from './access';
import type { NbdLogger } from './logger';
import { loadTlsCredentials, type NbdTlsOptions, type TlsCredentials, type TlsMode } from './tls-credentials';

/** Distinct refusals remembered for the once-per-client log; past it the memory starts afresh. */
export const REFUSALS_REMEMBERED_MAX = 4096;

export interface NbdSecurityOptions {
  tls: NbdTlsOptions;
  access: AccessRule[];
  /** Serve without TLS on an address that is not loopback (a deliberate choice, warned about). */
  insecure: boolean;
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x and `localhost`: addresses only this machine reaches. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (net.isIPv4(bare)) return bare.startsWith('127.');
  if (net.isIPv6(bare)) {
    const lower = bare.toLowerCase();
    if (lower === '::1' || /^(0{0,4}:){7}0{0,3}1$/.test(lower)) return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    return mapped !== null && mapped[1]!.startsWith('127.');
  }
  return false;
}

export class ServerSecurity {
  readonly tls_mode: TlsMode;
  readonly access: AccessPolicy;
  readonly insecure: boolean;
  private current: TlsCredentials | null;
  private readonly refusals_logged = new Set<string>();

  constructor(private readonly options: NbdSecurityOptions, private readonly logger: NbdLogger) {
    this.tls_mode = options.tls.mode;
    this.access = new AccessPolicy(options.access);
    this.insecure = options.insecure;
    this.current = options.tls.mode === 'off' ? null : loadTlsCredentials(options.tls);
  }

  /** The credentials a connection starting TLS now uses; null when TLS is off. */
  credentials(): TlsCredentials | null {
    return this.current;
  }

  /**
   * Reads the certificates and keys again. Live sessions keep theirs; new
   * ones get the new. A failure keeps the old credentials and throws (the
   * daemon logs it and serves on).
   */
  reload(): TlsCredentials | null {
    if (this.options.tls.mode === 'off') return null;
    this.current = loadTlsCredentials(this.options.tls);
    return this.current;
  }

  /**
   * Refuses a TCP listener on host that is not loopback unless TLS is
   * required or insecure was chosen; warns in that last case.
   */
  checkListener(host: string): void {
    if (isLoopbackHost(host) || this.tls_mode === 'require') return;
    if (!this.insecure) {
      throw new UblksnapError('EACCES',
        `NBD listener ${host} is reachable from other machines: it needs --nbd-tls require (with certificates or a PSK file), ` +
        'or --nbd-insecure to serve it without TLS on purpose');
    }
    this.logger.warn({ host, tls: this.tls_mode },
      'NBD listener on a non-loopback address without TLS required (--nbd-insecure): anyone who reaches it can read and write the exports');
  }

  /** One log line per client host, identity, export: a retrying client is not a flood. */
  noteRefusal(peer: string, identity: string, export_name: string, tls: boolean): void {
    const host = peer.replace(/:\d+$/, '');
    const key = `${host}\0${identity}\0${export_name}`;
    if (this.refusals_logged.has(key)) return;
    if (this.refusals_logged.size >= REFUSALS_REMEMBERED_MAX) this.refusals_logged.clear();
    this.refusals_logged.add(key);
    const reason = this.access.restricted ? `no rule grants ${identity} export ${export_name}` : 'refused';
    this.logger.warn({ peer: host, identity, export: export_name, tls }, `nbd export refused: ${reason}`);
  }
}
