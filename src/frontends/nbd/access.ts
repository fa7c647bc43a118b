// Authorisation per export: which client identities may open which exports,
// and whether only to read. A backup server, say, reads every image and
// writes no volume:
//
//   { identity: 'backup', exports: ['*@*'], read_only: true }
//
// Identities: the PSK user name of a PSK session, the subject's common name
// (CN) of a verified client certificate, or ANONYMOUS_IDENTITY for a client
// that proved nothing (plain TCP or Unix socket, x509 without a client
// certificate). An identity pattern `*` matches every proven identity, never
// an anonymous client: granting the world is written out as `anonymous`.
//
// Export patterns: a name, with `*` standing for any run of characters
// (`vm1`, `vm1@*` every image of vm1, `*@*` every image, `*` everything).
//
// No rules at all: every client may open every export read-write, as before
// this file existed (the safe defaults of the listener keep that to local
// clients, see server.ts). With rules: what no rule grants is refused; of
// several rules that grant an export, read-write wins.

/** The identity of a client that proved none. */
export const ANONYMOUS_IDENTITY = 'anonymous';
/** The identity pattern that matches every proven identity. */
export const ANY_IDENTITY = '*';
/** Rules one configuration may hold; each is checked per option, so they stay few. */
export const ACCESS_RULES_MAX = 256;
/** Export patterns one rule may hold. */
export const ACCESS_PATTERNS_MAX = 64;

export interface AccessRule {
  identity: string;
  exports: string[];
  read_only: boolean;
}

export type Access = 'read-write' | 'read-only' | 'none';

function patternMatches(pattern: string, name: string): boolean {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === name;
  const head = parts[0]!;
  const tail = parts[parts.length - 1]!;
  if (!name.startsWith(head) || name.length < head.length + tail.length || !name.endsWith(tail)) return false;
  let position = head.length;
  const end = name.length - tail.length;
  for (const middle of parts.slice(1, -1)) {
    const found = name.indexOf(middle, position);
    if (found < 0 || found + middle.length > end) return false;
    position = found + middle.length;
  }
  return true;
}

function identityMatches(pattern: string, identity: string): boolean {
  if (pattern === ANY_IDENTITY) return identity !== ANONYMOUS_IDENTITY;
  return pattern === identity;
}

/** Why a rule is malformed, or null: the config boundary (daemon/config.ts) reports it. */
export function accessRuleProblem(rule: AccessRule): string | null {
  if (rule.identity.length === 0) return 'identity must not be empty';
  if (rule.exports.length === 0) return 'exports must name at least one export pattern';
  if (rule.exports.length > ACCESS_PATTERNS_MAX) return `at most ${ACCESS_PATTERNS_MAX} export patterns per rule`;
  if (rule.exports.some((pattern) => pattern.length === 0)) return 'an export pattern must not be empty';
  return null;
}

export class AccessPolicy {
  constructor(private readonly rules: readonly AccessRule[]) {}

  get restricted(): boolean {
    return this.rules.length > 0;
  }

  /** What identity may do with the export named export_name. */
  accessOf(identity: string, export_name: string): Access {
    if (this.rules.length === 0) return 'read-write';
    let access: Access = 'none';
    for (const rule of this.rules) {
      if (!identityMatches(rule.identity, identity)) continue;
      if (!rule.exports.some((pattern) => patternMatches(pattern, export_name))) continue;
      if (!rule.read_only) return 'read-write';
      access = 'read-only';
    }
    return access;
  }
}
