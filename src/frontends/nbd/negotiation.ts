// Option haggling (fixed newstyle): the state a connection builds before
// transmission and the answer to each option, as a pure state machine over
// an ExportCatalog. The connection feeds it whole options and writes what
// it returns; nothing here touches a socket.
//
//   greeting ──client flags──► haggling ──GO ack / EXPORT_NAME──► transmission
//                                 │  ▲
//                                 │  └── INFO, LIST, STRUCTURED_REPLY,
//                                 │      LIST/SET_META_CONTEXT, unknown (ERR_UNSUP)
//                                 ├── ABORT ──► ACK, then close
//                                 └── violation / EXPORT_NAME of no export ──► hard disconnect
//
// Rules taken from proto.md:
// - unknown options get REP_ERR_UNSUP and haggling continues;
// - LIST, STRUCTURED_REPLY and STARTTLS carry no data (REP_ERR_INVALID);
// - TLS (security.tls_mode): `off` is proto.md's NOTLS mode, STARTTLS gets
//   REP_ERR_POLICY; `allow` offers STARTTLS and serves plain clients too;
//   `require` is TLS-only mode: before STARTTLS every option but STARTTLS
//   and ABORT gets REP_ERR_TLS_REQD (LIST too: exports are not even
//   listed), and EXPORT_NAME, which has no error reply, ends the session.
//   STARTTLS carries no data (REP_ERR_INVALID), a second one is INVALID;
//   after its ACK the haggling starts afresh inside TLS: what was agreed
//   before (structured replies, metadata contexts) is forgotten;
// - authorisation (security.accessOf): an export the client may not open
//   is left out of LIST and refused at INFO/GO/SET_META_CONTEXT with
//   REP_ERR_POLICY (EXPORT_NAME: the session ends); a read-only grant
//   serves the export with READ_ONLY set, and writes get EPERM;
// - SET_META_CONTEXT replaces the selection even when it fails, and needs
//   structured replies first; the selection survives into transmission
//   only if GO / EXPORT_NAME names the same export;
// - a server shutting down answers every option but ABORT with ERR_SHUTDOWN.

import type { Access } from './access';
import type { TlsMode } from './tls-credentials';
import {
  BlockSizes, encodeExportNameReply, encodeInfoBlockSize, encodeInfoExport, encodeInfoString,
  encodeMetaContextReply, encodeOptionError, encodeOptionReply, encodeServerReply, parseInfoRequest,
  parseMetaContextRequest,
} from './handshake-codec';
import { ContextOffer, MetaContext, isWellFormedQuery, listContexts, selectContexts } from './meta-context';
import {
  CLIENT_FLAGS_KNOWN, FLAG_CAN_MULTI_CONN, FLAG_C_NO_ZEROES, FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_DF,
  FLAG_SEND_FAST_ZERO, FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES, INFO_BLOCK_SIZE,
  INFO_DESCRIPTION, INFO_NAME, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT,
  OPT_SET_META_CONTEXT, OPT_STARTTLS, OPT_STRUCTURED_REPLY, REP_ACK, REP_ERR_INVALID, REP_ERR_POLICY,
  REP_ERR_SHUTDOWN, REP_ERR_TLS_REQD, REP_ERR_TOO_BIG, REP_ERR_UNKNOWN, REP_ERR_UNSUP, optionName,
} from './protocol';

/** What the catalog knows about one export, as negotiation needs it. */
export interface ExportDescription<Target = unknown> {
  /** The canonical name (what LIST shows and INFO_NAME reports). */
  name: string;
  description: string;
  size_bytes: number;
  writable: boolean;
  /** True when FLUSH and FUA on one connection cover every connection (no per-connection cache). */
  multi_conn: boolean;
  block_sizes: BlockSizes;
  offer: ContextOffer;
  /** Opaque to negotiation: what the connection binds to (an engine ExportTarget). */
  target: Target;
}

export interface ExportCatalog<Target = unknown> {
  names(): string[];
  /** The export a client-given name selects, or null when there is none. */
  describe(name: string): ExportDescription<Target> | null;
}

export interface NegotiationLimits {
  /** Options one connection may send before it is taken for a denial of service. */
  options_max: number;
  /** Contexts one SET_META_CONTEXT may select (more: REP_ERR_TOO_BIG). */
  meta_contexts_max: number;
  /** Queries one meta-context option may carry (more: REP_ERR_INVALID). */
  meta_queries_max: number;
}

/** What negotiation needs to know about the connection's security. */
export interface NegotiationSecurity {
  tls_mode: TlsMode;
  /** The session runs inside TLS (STARTTLS succeeded). */
  tls_active(): boolean;
  /**
   * What this client may do with the export of this canonical name.
   * `listing`: only deciding whether LIST shows it (no refusal to log).
   */
  accessOf(export_name: string, listing: boolean): Access;
}

/** No TLS, no rules: what a Unix-socket-only server without security settings does. */
export const OPEN_SECURITY: NegotiationSecurity = {
  tls_mode: 'off',
  tls_active: () => false,
  accessOf: () => 'read-write',
};

export type OptionOutcome<Target = unknown> =
  | { kind: 'continue'; replies: Buffer[] }
  /** Send the replies, then the TLS handshake as server; haggling goes on inside it. */
  | { kind: 'starttls'; replies: Buffer[] }
  | { kind: 'transmission'; replies: Buffer[]; export: ExportDescription<Target>; transmission_flags: number; contexts: MetaContext[]; structured: boolean; block_sizes_agreed: boolean }
  | { kind: 'abort'; replies: Buffer[] }
  | { kind: 'disconnect'; reason: string };

/** Client flags the server must refuse (by dropping the connection); null when acceptable. */
export function clientFlagsProblem(flags: number): string | null {
  const unknown = (flags & ~CLIENT_FLAGS_KNOWN) >>> 0;
  if (unknown !== 0) return `client flags 0x${flags.toString(16)} carry unknown bits 0x${unknown.toString(16)}`;
  return null;
}

/** The transmission flags of an export for a connection that did or did not agree to structured replies. */
export function transmissionFlagsOf(description: ExportDescription, structured: boolean): number {
  let flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH;
  if (description.writable) {
    flags |= FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
  } else {
    flags |= FLAG_READ_ONLY;
  }
  if (structured) flags |= FLAG_SEND_DF;
  if (description.multi_conn) flags |= FLAG_CAN_MULTI_CONN;
  return flags;
}

export class Negotiation<Target = unknown> {
  /** STRUCTURED_REPLY was agreed. */
  structured = false;
  options_count = 0;
  private readonly no_zeroes: boolean;
  /** The export named by the last SET_META_CONTEXT, and what it selected. */
  private meta_export: string | null = null;
  private meta_contexts: MetaContext[] = [];

  constructor(
    client_flags: number,
    private readonly catalog: ExportCatalog<Target>,
    private readonly limits: NegotiationLimits,
    private readonly security: NegotiationSecurity = OPEN_SECURITY,
  ) {
    this.no_zeroes = (client_flags & FLAG_C_NO_ZEROES) !== 0;
  }

  /** Answers one whole option. `shutting_down`: the server is stopping. */
  handle(option: number, data: Buffer, shutting_down: boolean): OptionOutcome<Target> {
    this.options_count += 1;
    if (this.options_count > this.limits.options_max) {
      return { kind: 'disconnect', reason: `more than ${this.limits.options_max} options in one handshake` };
    }
    if (option === OPT_ABORT) {
      // proto.md: ACK, and ignore any data the client sent with it.
      return { kind: 'abort', replies: [encodeOptionReply(option, REP_ACK)] };
    }
    if (shutting_down) {
      if (option === OPT_EXPORT_NAME) return { kind: 'disconnect', reason: 'the server is shutting down' };
      return this.reply(encodeOptionError(option, REP_ERR_SHUTDOWN, 'the server is shutting down'));
    }
    if (option === OPT_STARTTLS) return this.startTls(data);
    if (this.security.tls_mode === 'require' && !this.security.tls_active()) {
      if (option === OPT_EXPORT_NAME) return { kind: 'disconnect', reason: 'EXPORT_NAME before STARTTLS on a server that requires TLS' };
      return this.reply(encodeOptionError(option, REP_ERR_TLS_REQD, 'this server requires TLS: send STARTTLS first'));
    }
    switch (option) {
      case OPT_EXPORT_NAME: return this.exportName(data);
      case OPT_LIST: return this.list(data);
      case OPT_INFO:
      case OPT_GO: return this.infoOrGo(option, data);
      case OPT_STRUCTURED_REPLY: return this.structuredReply(data);
      case OPT_LIST_META_CONTEXT:
      case OPT_SET_META_CONTEXT: return this.metaContext(option, data);
      default:
        return this.reply(encodeOptionError(option, REP_ERR_UNSUP, `${optionName(option)} is not supported`));
    }
  }

  private reply(...replies: Buffer[]): OptionOutcome<Target> {
    return { kind: 'continue', replies };
  }

  private startTls(data: Buffer): OptionOutcome<Target> {
    if (data.length !== 0) return this.reply(encodeOptionError(OPT_STARTTLS, REP_ERR_INVALID, 'STARTTLS carries no data'));
    if (this.security.tls_mode === 'off') {
      return this.reply(encodeOptionError(OPT_STARTTLS, REP_ERR_POLICY, 'this server does not offer TLS; use a Unix socket or loopback'));
    }
    if (this.security.tls_active()) return this.reply(encodeOptionError(OPT_STARTTLS, REP_ERR_INVALID, 'TLS is already on'));
    // proto.md: nothing agreed in plain text carries into the TLS session.
    this.structured = false;
    this.meta_export = null;
    this.meta_contexts = [];
    return { kind: 'starttls', replies: [encodeOptionReply(OPT_STARTTLS, REP_ACK)] };
  }

  /**
   * The export a name selects, as this client may use it: null when there
   * is none, 'refused' when the client may not open it; read-only grants
   * come back not writable.
   */
  private describeFor(name: string, listing: boolean): ExportDescription<Target> | null | 'refused' {
    const description = this.catalog.describe(name);
    if (description === null) return null;
    const access = this.security.accessOf(description.name, listing);
    if (access === 'none') return 'refused';
    if (access === 'read-only' && description.writable) return { ...description, writable: false };
    return description;
  }

  private exportName(data: Buffer): OptionOutcome<Target> {
    // No error reply exists for EXPORT_NAME: anything wrong ends the session.
    const name = data.toString('utf8');
    const description = data.includes(0) ? null : this.describeFor(name, false);
    if (description === null) return { kind: 'disconnect', reason: `EXPORT_NAME of unknown export ${JSON.stringify(name)}` };
    if (description === 'refused') return { kind: 'disconnect', reason: `EXPORT_NAME of export ${JSON.stringify(name)} this client may not open` };
    const transmission_flags = transmissionFlagsOf(description, this.structured);
    return {
      kind: 'transmission',
      replies: [encodeExportNameReply(description.size_bytes, transmission_flags, this.no_zeroes)],
      export: description,
      transmission_flags,
      contexts: this.contextsFor(name),
      structured: this.structured,
      block_sizes_agreed: false,
    };
  }

  private list(data: Buffer): OptionOutcome<Target> {
    if (data.length !== 0) return this.reply(encodeOptionError(OPT_LIST, REP_ERR_INVALID, 'LIST carries no data'));
    const replies: Buffer[] = [];
    for (const name of this.catalog.names()) {
      const description = this.describeFor(name, true);
      if (description !== null && description !== 'refused') replies.push(encodeServerReply(OPT_LIST, name, description.description));
    }
    replies.push(encodeOptionReply(OPT_LIST, REP_ACK));
    return { kind: 'continue', replies };
  }

  private infoOrGo(option: number, data: Buffer): OptionOutcome<Target> {
    const request = parseInfoRequest(data);
    if (typeof request === 'string') return this.reply(encodeOptionError(option, REP_ERR_INVALID, request));
    const description = this.describeFor(request.name, false);
    if (description === null) {
      return this.reply(encodeOptionError(option, REP_ERR_UNKNOWN, `no export named ${JSON.stringify(request.name)}`));
    }
    if (description === 'refused') return this.reply(refusal(option, request.name));
    const transmission_flags = transmissionFlagsOf(description, this.structured);
    const replies = [encodeInfoExport(option, description.size_bytes, transmission_flags)];
    // Block sizes go out whether asked for or not: proto.md lets a server send
    // unrequested information, and our limits are not the defaults.
    replies.push(encodeInfoBlockSize(option, description.block_sizes));
    if (request.info_types.includes(INFO_NAME)) replies.push(encodeInfoString(option, INFO_NAME, description.name));
    if (request.info_types.includes(INFO_DESCRIPTION)) {
      replies.push(encodeInfoString(option, INFO_DESCRIPTION, description.description));
    }
    replies.push(encodeOptionReply(option, REP_ACK));
    if (option === OPT_INFO) return { kind: 'continue', replies };
    return {
      kind: 'transmission',
      replies,
      export: description,
      transmission_flags,
      contexts: this.contextsFor(request.name),
      structured: this.structured,
      block_sizes_agreed: request.info_types.includes(INFO_BLOCK_SIZE),
    };
  }

  private structuredReply(data: Buffer): OptionOutcome<Target> {
    if (data.length !== 0) {
      return this.reply(encodeOptionError(OPT_STRUCTURED_REPLY, REP_ERR_INVALID, 'STRUCTURED_REPLY carries no data'));
    }
    if (this.structured) {
      return this.reply(encodeOptionError(OPT_STRUCTURED_REPLY, REP_ERR_INVALID, 'structured replies are already agreed'));
    }
    this.structured = true;
    return this.reply(encodeOptionReply(OPT_STRUCTURED_REPLY, REP_ACK));
  }

  private metaContext(option: number, data: Buffer): OptionOutcome<Target> {
    const setting = option === OPT_SET_META_CONTEXT;
    if (setting) {
      // proto.md: SET replaces the selection, also when it fails.
      this.meta_export = null;
      this.meta_contexts = [];
    }
    if (!this.structured) {
      return this.reply(encodeOptionError(option, REP_ERR_INVALID, 'metadata contexts need STRUCTURED_REPLY first'));
    }
    const request = parseMetaContextRequest(data, this.limits.meta_queries_max);
    if (typeof request === 'string') return this.reply(encodeOptionError(option, REP_ERR_INVALID, request));
    const malformed = request.queries.find((query) => !isWellFormedQuery(query));
    if (malformed !== undefined) {
      return this.reply(encodeOptionError(option, REP_ERR_INVALID, `query ${JSON.stringify(malformed)} has no namespace`));
    }
    const description = this.describeFor(request.export_name, false);
    if (description === null) {
      return this.reply(encodeOptionError(option, REP_ERR_UNKNOWN, `no export named ${JSON.stringify(request.export_name)}`));
    }
    if (description === 'refused') return this.reply(refusal(option, request.export_name));
    const replies: Buffer[] = [];
    if (!setting) {
      for (const name of listContexts(request.queries, description.offer)) replies.push(encodeMetaContextReply(option, 0, name));
    } else {
      const selected = selectContexts(request.queries, description.offer, this.limits.meta_contexts_max);
      if (selected === null) {
        return this.reply(encodeOptionError(option, REP_ERR_TOO_BIG, `at most ${this.limits.meta_contexts_max} contexts may be selected`));
      }
      for (const context of selected) replies.push(encodeMetaContextReply(option, context.id, context.name));
      this.meta_export = request.export_name;
      this.meta_contexts = selected;
    }
    replies.push(encodeOptionReply(option, REP_ACK));
    return { kind: 'continue', replies };
  }

  /** The selected contexts carry into transmission only for the export they were selected on. */
  private contextsFor(export_name: string): MetaContext[] {
    return this.meta_export === export_name ? this.meta_contexts : [];
  }
}

function refusal(option: number, export_name: string): Buffer {
  return encodeOptionError(option, REP_ERR_POLICY, `this client may not open export ${JSON.stringify(export_name)}`);
}
