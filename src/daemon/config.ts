// The daemon's configuration, merged from four sources and validated once,
// here, at the boundary (docs/style.md habit 9):
//
//   flags  >  config file  >  environment  >  defaults
//
//   flag               config key      environment            default
//   --config FILE      (n/a)           UBLKSNAP_CONFIG        none
//   --state-dir DIR    state_dir       UBLKSNAP_STATE_DIR     /var/lib/ublksnap, ~/.local/state/ublksnap (paths.ts)
//   --socket PATH      socket          UBLKSNAP_SOCKET        <runtime dir>/ublksnap.sock
//   --nbd-socket PATH  nbd_socket      UBLKSNAP_NBD_SOCKET    <runtime dir>/nbd.sock (when NBD exists)
//   --nbd-listen H:P   nbd_listen      UBLKSNAP_NBD_LISTEN    none (no TCP)
//   --nbd-tls MODE     nbd_tls         UBLKSNAP_NBD_TLS       off; require when credentials are given
//   --nbd-tls-certificates DIR  nbd_tls_certificates  UBLKSNAP_NBD_TLS_CERTIFICATES  none
//   --nbd-tls-psk-file FILE     nbd_tls_psk_file      UBLKSNAP_NBD_TLS_PSK_FILE      none
//   --nbd-tls-verify-peer       nbd_tls_verify_peer   UBLKSNAP_NBD_TLS_VERIFY_PEER   false
//   --nbd-allow RULE …          nbd_allow [{identity, exports, read_only}]  UBLKSNAP_NBD_ALLOW (RULE;RULE)  none: all may open all
//   --nbd-insecure              nbd_insecure          UBLKSNAP_NBD_INSECURE          false
//   --log-level LEVEL  log_level       UBLKSNAP_LOG_LEVEL     info
//   --param N=V …      params {N: V}   (none)                 docs/design.md §7
//   (none)             volumes [{path, name}]                 none: volumes to attach at start
//
// Config keys may be written with '-' or '_' (`state-dir` or `state_dir`).
// Relative paths are resolved against the config file's directory when they
// come from the file, against the working directory otherwise.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UblksnapError } from '../shared/errors';
import { parseParamAssignment, validateParams, type Params } from '../shared/params';
import type { ListenAddress, NetworkSecurity } from '../frontends/frontend';
import { PATH_LENGTH_MAX, VOLUME_NAME_LENGTH_MAX, VOLUME_NAME_PATTERN } from '../ipc/methods';
import { array, boolean, object, oneOf, optional, string, validate } from '../ipc/schema';
import { defaultSocketPath, defaultStateDir } from './paths';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_LEVEL_DEFAULT: LogLevel = 'info';
/** A config file larger than this is not a config file. */
export const CONFIG_FILE_BYTES_MAX = 1024 * 1024;
/** Volumes a config file may attach at start. */
export const CONFIG_VOLUMES_MAX = 1024;
const HOST_LENGTH_MAX = 255;
export const NBD_TLS_MODES = ['off', 'allow', 'require'] as const;
/** Authorisation rules a config may hold (the NBD server checks them per option). */
export const NBD_ALLOW_RULES_MAX = 256;
const NBD_ALLOW_PATTERNS_MAX = 64;
const NBD_IDENTITY_LENGTH_MAX = 256;
const NBD_PATTERN_LENGTH_MAX = 512;
/** Values of a boolean environment variable. */
const ENV_TRUE = ['1', 'true', 'yes'];
const ENV_FALSE = ['0', 'false', 'no'];
const PORT_MAX = 65_535;

export type { ListenAddress };

export interface DaemonConfig {
  state_dir: string;
  socket: string;
  /** Null: not given (the daemon picks the default when an NBD frontend exists). */
  nbd_socket: string | null;
  nbd_listen: ListenAddress | null;
  /** TLS, authorisation, and the non-loopback rule of the NBD server. */
  nbd_security: NetworkSecurity;
  log_level: LogLevel;
  params: Params;
  volumes: { path: string; name?: string }[];
  /** Where the file part came from, for the start-up log. */
  config_file: string | null;
}

/** What the command line said; everything optional. */
export interface DaemonFlags {
  config?: string;
  state_dir?: string;
  socket?: string;
  nbd_socket?: string;
  nbd_listen?: string;
  nbd_tls?: string;
  nbd_tls_certificates?: string;
  nbd_tls_psk_file?: string;
  nbd_tls_verify_peer?: boolean;
  nbd_allow?: string[];
  nbd_insecure?: boolean;
  log_level?: string;
  params: string[];
  help: boolean;
}

export const DAEMON_USAGE = `Usage: ublksnap daemon [options]

Runs the ublksnap daemon in the foreground until SIGTERM or SIGINT.

Options:
  --config FILE        JSON config file (keys: state_dir, socket, nbd_socket,
                       nbd_listen, log_level, params, volumes)
  --state-dir DIR      state directory: pid file, the record of attached
                       volumes and their saved change tracking, kept
                       across restarts and reboots  [${defaultStateDir()}]
  --socket PATH        control socket                      [${defaultSocketPath()}]
  --nbd-socket PATH    NBD Unix socket (when the NBD frontend is built in)
  --nbd-listen H:PORT  NBD TCP listener, e.g. 127.0.0.1:10809; an address
                       other machines reach needs --nbd-tls require
  --nbd-tls MODE       off, allow or require: STARTTLS on NBD TCP
                       [off; require when a certificate dir or PSK file is given]
  --nbd-tls-certificates DIR   x509: ca-cert.pem, server-cert.pem,
                       server-key.pem (mode 0600), as qemu-nbd and nbdkit
  --nbd-tls-psk-file FILE      PSK: user:hexkey lines (mode 0600), as psktool
  --nbd-tls-verify-peer        clients must present a certificate signed
                       by ca-cert.pem; its CN is their identity
  --nbd-allow IDENTITY=EXPORT[,EXPORT…][:ro]   who may open what (a PSK
                       user or certificate CN, * any proven identity,
                       anonymous; * in an export matches anything, e.g.
                       backup=*@*:ro); repeatable. None: all may open all
  --nbd-insecure       allow a non-loopback NBD listener without TLS (warned)
  --log-level LEVEL    ${LOG_LEVELS.join(', ')}  [${LOG_LEVEL_DEFAULT}]
  --param NAME=VALUE   a docs/design.md §7 parameter; repeatable
  -h, --help           this help

SIGHUP reads the TLS certificates and keys again; connected clients stay.

Restarts: volumes attached over IPC are attached again at start (after the
config's volumes); a clean stop (SIGTERM, SIGINT) saves each volume's change
tracking, so the next incremental backup stays incremental. After a crash,
or when the volume changed while the daemon was down, a new generation
begins and cbtinfo's generation_reason says why.

Precedence: flags, then the config file, then UBLKSNAP_* environment
variables (UBLKSNAP_CONFIG, UBLKSNAP_STATE_DIR, UBLKSNAP_SOCKET,
UBLKSNAP_NBD_SOCKET, UBLKSNAP_NBD_LISTEN, UBLKSNAP_NBD_TLS,
UBLKSNAP_NBD_TLS_CERTIFICATES, UBLKSNAP_NBD_TLS_PSK_FILE,
UBLKSNAP_NBD_TLS_VERIFY_PEER, UBLKSNAP_NBD_ALLOW (rules split by ;),
UBLKSNAP_NBD_INSECURE, UBLKSNAP_LOG_LEVEL), then defaults.
`;

function invalid(message: string): never {
  throw new UblksnapError('EINVAL', message);
}

/** The flags of `ublksnap daemon` (the manual page lists each: test/docs/manual.test.ts). */
export const DAEMON_OPTIONS = {
  config: { type: 'string' },
  'state-dir': { type: 'string' },
  socket: { type: 'string' },
  'nbd-socket': { type: 'string' },
  'nbd-listen': { type: 'string' },
  'nbd-tls': { type: 'string' },
  'nbd-tls-certificates': { type: 'string' },
  'nbd-tls-psk-file': { type: 'string' },
  'nbd-tls-verify-peer': { type: 'boolean' },
  'nbd-allow': { type: 'string', multiple: true },
  'nbd-insecure': { type: 'boolean' },
  'log-level': { type: 'string' },
  param: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseDaemonFlags(argv: string[]): DaemonFlags {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: DAEMON_OPTIONS,
    }));
  } catch (error) {
    // parseArgs throws a TypeError (ERR_PARSE_ARGS_*) naming the bad option on its first line.
    invalid(((error as Error).message.split('\n')[0] ?? '').trim());
  }
  const flags: DaemonFlags = { params: values.param ?? [], nbd_allow: values['nbd-allow'] ?? [], help: values.help ?? false };
  if (values['nbd-tls'] !== undefined) flags.nbd_tls = values['nbd-tls'];
  if (values['nbd-tls-certificates'] !== undefined) flags.nbd_tls_certificates = values['nbd-tls-certificates'];
  if (values['nbd-tls-psk-file'] !== undefined) flags.nbd_tls_psk_file = values['nbd-tls-psk-file'];
  if (values['nbd-tls-verify-peer'] !== undefined) flags.nbd_tls_verify_peer = values['nbd-tls-verify-peer'];
  if (values['nbd-insecure'] !== undefined) flags.nbd_insecure = values['nbd-insecure'];
  if (values.config !== undefined) flags.config = values.config;
  if (values['state-dir'] !== undefined) flags.state_dir = values['state-dir'];
  if (values.socket !== undefined) flags.socket = values.socket;
  if (values['nbd-socket'] !== undefined) flags.nbd_socket = values['nbd-socket'];
  if (values['nbd-listen'] !== undefined) flags.nbd_listen = values['nbd-listen'];
  if (values['log-level'] !== undefined) flags.log_level = values['log-level'];
  return flags;
}

/** `HOST:PORT`, `[IPV6]:PORT`. */
export function parseListenAddress(text: string, source: string): ListenAddress {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) invalid(`${source}: expected HOST:PORT or [IPV6]:PORT, got ${JSON.stringify(text)}`);
  const host = (match[1] ?? match[2]) as string;
  const port = Number(match[3]);
  if (host.length > HOST_LENGTH_MAX) invalid(`${source}: host longer than ${HOST_LENGTH_MAX} characters`);
  if (port > PORT_MAX) invalid(`${source}: port must be in [0, ${PORT_MAX}], got ${port}`);
  return { host, port };
}

type AllowRule = NetworkSecurity['access'][number];

/** `IDENTITY=EXPORT[,EXPORT…][:ro|:rw]`, as --nbd-allow and UBLKSNAP_NBD_ALLOW write a rule. */
export function parseAllowRule(text: string, source: string): AllowRule {
  const match = /^([^=]+)=(.+?)(?::(ro|rw))?$/.exec(text.trim());
  if (!match) invalid(`${source}: expected IDENTITY=EXPORT[,EXPORT…][:ro], got ${JSON.stringify(text)}`);
  return checkAllowRule({ identity: match[1]!, exports: match[2]!.split(','), read_only: match[3] === 'ro' }, source);
}

function checkAllowRule(rule: AllowRule, source: string): AllowRule {
  if (rule.identity.length === 0 || rule.identity.length > NBD_IDENTITY_LENGTH_MAX) invalid(`${source}: identity must have 1 to ${NBD_IDENTITY_LENGTH_MAX} characters`);
  if (rule.exports.length === 0 || rule.exports.length > NBD_ALLOW_PATTERNS_MAX) invalid(`${source}: 1 to ${NBD_ALLOW_PATTERNS_MAX} export patterns`);
  for (const pattern of rule.exports) {
    if (pattern.length === 0 || pattern.length > NBD_PATTERN_LENGTH_MAX) invalid(`${source}: an export pattern must have 1 to ${NBD_PATTERN_LENGTH_MAX} characters`);
  }
  return rule;
}

function checkBooleanEnv(text: string, name: string): boolean {
  if (ENV_TRUE.includes(text.toLowerCase())) return true;
  if (ENV_FALSE.includes(text.toLowerCase())) return false;
  invalid(`${name}: expected one of ${[...ENV_TRUE, ...ENV_FALSE].join(', ')}, got ${JSON.stringify(text)}`);
}

function checkLogLevel(text: string, source: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(text)) invalid(`${source}: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(text)}`);
  return text as LogLevel;
}

function checkPath(text: string, source: string, base: string): string {
  if (text.length === 0) invalid(`${source}: must not be empty`);
  if (text.length > PATH_LENGTH_MAX) invalid(`${source}: longer than ${PATH_LENGTH_MAX} characters`);
  if (text.includes('\0')) invalid(`${source}: must not contain a NUL character`);
  return path.resolve(base, text);
}

const CONFIG_FILE_SCHEMA = object({
  state_dir: optional(string(PATH_LENGTH_MAX)),
  socket: optional(string(PATH_LENGTH_MAX)),
  nbd_socket: optional(string(PATH_LENGTH_MAX)),
  nbd_listen: optional(string(HOST_LENGTH_MAX + 8)),
  nbd_tls: optional(oneOf(NBD_TLS_MODES)),
  nbd_tls_certificates: optional(string(PATH_LENGTH_MAX)),
  nbd_tls_psk_file: optional(string(PATH_LENGTH_MAX)),
  nbd_tls_verify_peer: optional(boolean()),
  nbd_insecure: optional(boolean()),
  nbd_allow: optional(array(object({
    identity: string(NBD_IDENTITY_LENGTH_MAX),
    exports: array(string(NBD_PATTERN_LENGTH_MAX), NBD_ALLOW_PATTERNS_MAX, 1),
    read_only: optional(boolean()),
  }), NBD_ALLOW_RULES_MAX)),
  log_level: optional(oneOf(LOG_LEVELS)),
  volumes: optional(array(object({
    path: string(PATH_LENGTH_MAX),
    name: optional(string(VOLUME_NAME_LENGTH_MAX, { pattern: VOLUME_NAME_PATTERN, pattern_name: 'a volume name' })),
  }), CONFIG_VOLUMES_MAX)),
});

interface ConfigFile {
  path: string;
  values: Record<string, unknown>;
  params: unknown;
}

export function readConfigFile(file: string): ConfigFile {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    // ENOENT, EACCES, EISDIR: all mean "cannot use this file"; say which.
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    if (code === 'ENOENT') throw new UblksnapError('ENOENT', `config file ${absolute} does not exist`);
    throw new UblksnapError('EINVAL', `config file ${absolute}: cannot read it (${code})`);
  }
  if (text.length > CONFIG_FILE_BYTES_MAX) invalid(`config file ${absolute}: larger than ${CONFIG_FILE_BYTES_MAX} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    invalid(`config file ${absolute}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) invalid(`config file ${absolute}: must hold a JSON object`);
  // Normalise `state-dir` to `state_dir`; refuse a key given both ways.
  const normalised: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const snake = key.replace(/-/g, '_');
    if (Object.hasOwn(normalised, snake)) invalid(`config file ${absolute}: ${snake} is given twice`);
    normalised[snake] = value;
  }
  // params are checked by validateParams, which knows their ranges.
  const params = normalised.params;
  delete normalised.params;
  try {
    validate(CONFIG_FILE_SCHEMA, normalised, 'config');
  } catch (error) {
    throw new UblksnapError('EINVAL', `config file ${absolute}: ${(error as Error).message}`);
  }
  return { path: absolute, values: normalised, params };
}

/**
 * Merges flags, the config file (from --config or UBLKSNAP_CONFIG), the
 * environment and the defaults into one validated config.
 */
export function resolveConfig(flags: DaemonFlags, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): DaemonConfig {
  const config_path = flags.config ?? (env.UBLKSNAP_CONFIG || undefined);
  const file = config_path !== undefined ? readConfigFile(path.resolve(cwd, config_path)) : null;
  const file_dir = file ? path.dirname(file.path) : cwd;
  const from_file = (key: string): string | undefined => file?.values[key] as string | undefined;
  const env_value = (name: string): string | undefined => (env[name] ? env[name] : undefined);

  // One string option through the precedence chain, with its source named for errors.
  const pick = (flag: string | undefined, key: string, env_name: string): { value: string; source: string; base: string } | null => {
    if (flag !== undefined) return { value: flag, source: `--${key.replace(/_/g, '-')}`, base: cwd };
    const in_file = from_file(key);
    if (in_file !== undefined) return { value: in_file, source: `config file ${file?.path}: ${key}`, base: file_dir };
    const in_env = env_value(env_name);
    if (in_env !== undefined) return { value: in_env, source: env_name, base: cwd };
    return null;
  };

  const state_dir = pick(flags.state_dir, 'state_dir', 'UBLKSNAP_STATE_DIR');
  const socket = pick(flags.socket, 'socket', 'UBLKSNAP_SOCKET');
  const nbd_socket = pick(flags.nbd_socket, 'nbd_socket', 'UBLKSNAP_NBD_SOCKET');
  const nbd_listen = pick(flags.nbd_listen, 'nbd_listen', 'UBLKSNAP_NBD_LISTEN');
  const log_level = pick(flags.log_level, 'log_level', 'UBLKSNAP_LOG_LEVEL');
  const nbd_security = resolveNbdSecurity(flags, file?.values ?? {}, file?.path ?? null, env, pick);

  let params: Params;
  try {
    params = validateParams(file?.params);
  } catch (error) {
    throw new UblksnapError('EINVAL', `config file ${file?.path}: params: ${(error as Error).message}`);
  }
  const overrides: Partial<Params> = {};
  for (const assignment of flags.params) {
    const [name, value] = parseParamAssignment(assignment);
    overrides[name] = value;
  }
  params = validateParams({ ...params, ...overrides });

  const volumes = ((file?.values.volumes ?? []) as { path: string; name?: string }[]).map((volume, index) => {
    const entry: { path: string; name?: string } = { path: checkPath(volume.path, `config file ${file?.path}: volumes[${index}].path`, file_dir) };
    if (volume.name !== undefined) entry.name = volume.name;
    return entry;
  });

  return {
    state_dir: state_dir ? checkPath(state_dir.value, state_dir.source, state_dir.base) : defaultStateDir(env),
    socket: socket ? checkPath(socket.value, socket.source, socket.base) : defaultSocketPath(env),
    nbd_socket: nbd_socket ? checkPath(nbd_socket.value, nbd_socket.source, nbd_socket.base) : null,
    nbd_listen: nbd_listen ? parseListenAddress(nbd_listen.value, nbd_listen.source) : null,
    nbd_security,
    log_level: log_level ? checkLogLevel(log_level.value, log_level.source) : LOG_LEVEL_DEFAULT,
    params,
    volumes,
    config_file: file?.path ?? null,
  };
}

type Pick = (flag: string | undefined, key: string, env_name: string) => { value: string; source: string; base: string } | null;

/**
 * The NBD server's security settings through the same precedence chain.
 * Credentials without a mode mean require: giving a key and leaving the
 * door open would be a surprise. A mode other than off needs credentials.
 */
function resolveNbdSecurity(
  flags: DaemonFlags, values: Record<string, unknown>, file_path: string | null, env: NodeJS.ProcessEnv, pick: Pick,
): NetworkSecurity {
  const certificates = pick(flags.nbd_tls_certificates, 'nbd_tls_certificates', 'UBLKSNAP_NBD_TLS_CERTIFICATES');
  const psk_file = pick(flags.nbd_tls_psk_file, 'nbd_tls_psk_file', 'UBLKSNAP_NBD_TLS_PSK_FILE');
  const mode_given = pick(flags.nbd_tls, 'nbd_tls', 'UBLKSNAP_NBD_TLS');
  const boolean_option = (flag: boolean | undefined, key: string, env_name: string): boolean => {
    if (flag !== undefined) return flag;
    if (typeof values[key] === 'boolean') return values[key] as boolean;
    const in_env = env[env_name];
    return in_env ? checkBooleanEnv(in_env, env_name) : false;
  };
  let mode: NetworkSecurity['tls']['mode'] = certificates !== null || psk_file !== null ? 'require' : 'off';
  if (mode_given !== null) {
    if (!(NBD_TLS_MODES as readonly string[]).includes(mode_given.value)) {
      invalid(`${mode_given.source}: expected one of ${NBD_TLS_MODES.join(', ')}, got ${JSON.stringify(mode_given.value)}`);
    }
    mode = mode_given.value as NetworkSecurity['tls']['mode'];
  }
  const verify_peer = boolean_option(flags.nbd_tls_verify_peer, 'nbd_tls_verify_peer', 'UBLKSNAP_NBD_TLS_VERIFY_PEER');
  if (mode !== 'off' && certificates === null && psk_file === null) {
    invalid(`${mode_given?.source ?? 'nbd_tls'}: TLS ${mode} needs --nbd-tls-certificates DIR or --nbd-tls-psk-file FILE`);
  }
  if (verify_peer && certificates === null) invalid('--nbd-tls-verify-peer needs --nbd-tls-certificates DIR (with ca-cert.pem)');
  let access: NetworkSecurity['access'];
  if (flags.nbd_allow !== undefined && flags.nbd_allow.length > 0) {
    access = flags.nbd_allow.map((text, index) => parseAllowRule(text, `--nbd-allow #${index + 1}`));
  } else if (values.nbd_allow !== undefined) {
    access = (values.nbd_allow as { identity: string; exports: string[]; read_only?: boolean }[]).map((rule, index) =>
      checkAllowRule({ identity: rule.identity, exports: rule.exports, read_only: rule.read_only === true }, `config file ${file_path}: nbd_allow[${index}]`));
  } else if (env.UBLKSNAP_NBD_ALLOW) {
    access = env.UBLKSNAP_NBD_ALLOW.split(';').filter((text) => text.trim() !== '')
      .map((text, index) => parseAllowRule(text, `UBLKSNAP_NBD_ALLOW rule ${index + 1}`));
  } else {
    access = [];
  }
  if (access.length > NBD_ALLOW_RULES_MAX) invalid(`at most ${NBD_ALLOW_RULES_MAX} --nbd-allow rules`);
  return {
    tls: {
      mode,
      certificates_dir: certificates ? checkPath(certificates.value, certificates.source, certificates.base) : null,
      psk_file: psk_file ? checkPath(psk_file.value, psk_file.source, psk_file.base) : null,
      verify_peer,
    },
    access,
    insecure: boolean_option(flags.nbd_insecure, 'nbd_insecure', 'UBLKSNAP_NBD_INSECURE'),
  };
}
