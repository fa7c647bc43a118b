// The wire protocol of the control socket: JSON-RPC 2.0, one JSON object per
// line (UTF-8, '\n' terminated), over a Unix stream socket.
//
//   client → daemon   {"jsonrpc":"2.0","id":1,"method":"snapshot_take","params":{"id":"…"}}
//   daemon → client   {"jsonrpc":"2.0","id":1,"result":{}}
//                     {"jsonrpc":"2.0","id":1,"error":{"code":-32003,"message":"…","data":{"code":"ESRCH"}}}
//
// Error codes. Protocol-level failures use JSON-RPC's reserved codes
// (parse error, invalid request, unknown method, invalid params); operating
// errors from the engine use rpcCodeOf() of errors.ts (-32000 - errno).
// Either way `error.data.code` carries the errno name (EINVAL, ESRCH, …),
// which is what clients test for.
//
// Requests on one connection are served concurrently and answered in
// completion order, matched by id. Batches are refused: the CLI never sends
// them and a batch would let one line start an unbounded amount of work.

import { UblksnapError, rpcCodeOf, type ErrorCode } from '../shared/errors';
import { MiB } from '../shared/units';

export const JSONRPC_VERSION = '2.0';

/** A request line longer than this is answered with E2BIG and the connection closed. */
export const REQUEST_LINE_BYTES_MAX = 1 * MiB;
/** A reply line the client accepts; readcbtmap pieces and status stay far below it. */
export const REPLY_LINE_BYTES_MAX = 64 * MiB;
/** Method names are short identifiers. */
export const METHOD_NAME_LENGTH_MAX = 64;
/** A string id longer than this is refused (ids are echoed back). */
export const REQUEST_ID_LENGTH_MAX = 128;

export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
export const RPC_INTERNAL_ERROR = -32603;

export type RequestId = string | number | null;

export interface RpcRequest {
  jsonrpc: typeof JSONRPC_VERSION;
  id?: RequestId;
  method: string;
  params?: unknown;
}

export interface RpcErrorObject {
  code: number;
  message: string;
  data: { code: ErrorCode };
}

export interface RpcSuccess {
  jsonrpc: typeof JSONRPC_VERSION;
  id: RequestId;
  result: unknown;
}

export interface RpcFailure {
  jsonrpc: typeof JSONRPC_VERSION;
  id: RequestId;
  error: RpcErrorObject;
}

export type RpcResponse = RpcSuccess | RpcFailure;

/** An error bound for the wire: an errno name plus the JSON-RPC code to send. */
export class RpcError extends UblksnapError {
  constructor(readonly rpc_code: number, code: ErrorCode, message: string) {
    super(code, message);
  }
}

export function errorObjectOf(error: unknown): RpcErrorObject {
  if (error instanceof RpcError) return { code: error.rpc_code, message: error.message, data: { code: error.code } };
  if (error instanceof UblksnapError) return { code: rpcCodeOf(error.code), message: error.message, data: { code: error.code } };
  const message = error instanceof Error ? error.message : String(error);
  return { code: RPC_INTERNAL_ERROR, message: `internal error: ${message}`, data: { code: 'EIO' } };
}

export function successLine(id: RequestId, result: unknown): string {
  return `${JSON.stringify({ jsonrpc: JSONRPC_VERSION, id, result })}\n`;
}

export function failureLine(id: RequestId, error: unknown): string {
  return `${JSON.stringify({ jsonrpc: JSONRPC_VERSION, id, error: errorObjectOf(error) })}\n`;
}

export function requestLine(id: number, method: string, params: unknown): string {
  return `${JSON.stringify({ jsonrpc: JSONRPC_VERSION, id, method, params })}\n`;
}

function isValidId(id: unknown): id is RequestId {
  if (id === null) return true;
  if (typeof id === 'number') return Number.isSafeInteger(id);
  return typeof id === 'string' && id.length <= REQUEST_ID_LENGTH_MAX;
}

export type ParsedLine =
  | { kind: 'request'; request: RpcRequest; notification: boolean }
  | { kind: 'invalid'; id: RequestId; error: RpcError };

/**
 * Parses one request line. Never throws: every failure becomes an error the
 * server can send back (with the request's id when it could be recovered).
 */
export function parseRequestLine(line: string): ParsedLine {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    // SyntaxError (or RangeError on absurd input): the line is not JSON.
    const why = error instanceof Error ? error.message : String(error);
    return { kind: 'invalid', id: null, error: new RpcError(RPC_PARSE_ERROR, 'EINVAL', `parse error: ${why.slice(0, 200)}`) };
  }
  if (Array.isArray(value)) {
    return { kind: 'invalid', id: null, error: new RpcError(RPC_INVALID_REQUEST, 'EINVAL', 'batch requests are not supported: send one object per line') };
  }
  if (typeof value !== 'object' || value === null) {
    return { kind: 'invalid', id: null, error: new RpcError(RPC_INVALID_REQUEST, 'EINVAL', 'a request must be a JSON object') };
  }
  const object = value as Record<string, unknown>;
  const has_id = Object.hasOwn(object, 'id');
  if (has_id && !isValidId(object.id)) {
    return { kind: 'invalid', id: null, error: new RpcError(RPC_INVALID_REQUEST, 'EINVAL', `id must be a string of at most ${REQUEST_ID_LENGTH_MAX} characters, an integer or null`) };
  }
  const id = has_id ? (object.id as RequestId) : null;
  const invalid = (message: string): ParsedLine => ({ kind: 'invalid', id, error: new RpcError(RPC_INVALID_REQUEST, 'EINVAL', message) });
  if (object.jsonrpc !== JSONRPC_VERSION) return invalid('jsonrpc must be "2.0"');
  if (typeof object.method !== 'string' || object.method.length === 0 || object.method.length > METHOD_NAME_LENGTH_MAX) {
    return invalid(`method must be a non-empty string of at most ${METHOD_NAME_LENGTH_MAX} characters`);
  }
  for (const key of Object.keys(object)) {
    if (key !== 'jsonrpc' && key !== 'id' && key !== 'method' && key !== 'params') return invalid(`unknown member ${JSON.stringify(key.slice(0, 64))}`);
  }
  const request: RpcRequest = { jsonrpc: JSONRPC_VERSION, method: object.method, params: object.params };
  if (has_id) request.id = id;
  return { kind: 'request', request, notification: !has_id };
}

export function methodNotFound(method: string, known: readonly string[]): RpcError {
  return new RpcError(RPC_METHOD_NOT_FOUND, 'ENOTSUP', `unknown method ${JSON.stringify(method)} (known: ${known.join(', ')})`);
}

export function invalidParams(error: UblksnapError): RpcError {
  return new RpcError(RPC_INVALID_PARAMS, error.code, error.message);
}
