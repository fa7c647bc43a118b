// Goal: every request line, well-formed or not, parses to a request or to
// an error reply with the right JSON-RPC code, errno name and id; engine
// errors map through rpcCodeOf.
// Method: a table of lines (valid, notification, bad JSON, batch, wrong
// version, bad ids, bad method names, extra members) and of errors.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  RPC_INTERNAL_ERROR, RPC_INVALID_REQUEST, RPC_PARSE_ERROR, errorObjectOf, failureLine, parseRequestLine,
} from '../../src/ipc/protocol';
import { UblksnapError, rpcCodeOf } from '../../src/shared/errors';

test('a request, a notification, params kept as sent', () => {
  const parsed = parseRequestLine('{"jsonrpc":"2.0","id":7,"method":"status","params":{"a":[1]}}');
  assert.equal(parsed, { kind: 'request', request: { jsonrpc: '2.0', id: 7, method: 'status', params: { a: [1] } }, notification: false });
  const notification = parseRequestLine('{"jsonrpc":"2.0","method":"status"}');
  assert.is(notification.kind === 'request' && notification.notification, true);
  const string_id = parseRequestLine('{"jsonrpc":"2.0","id":"abc","method":"x"}');
  assert.is(string_id.kind === 'request' && string_id.request.id, 'abc');
});

const BAD: [string, string, number, unknown][] = [
  ['not JSON', '{"jsonrpc":', RPC_PARSE_ERROR, null],
  ['random bytes', '\u0000\u00ff\u0012garbage', RPC_PARSE_ERROR, null],
  ['a batch', '[{"jsonrpc":"2.0","id":1,"method":"status"}]', RPC_INVALID_REQUEST, null],
  ['a number', '42', RPC_INVALID_REQUEST, null],
  ['a string', '"status"', RPC_INVALID_REQUEST, null],
  ['JSON-RPC 1.0', '{"id":1,"method":"status"}', RPC_INVALID_REQUEST, 1],
  ['wrong version', '{"jsonrpc":"3.0","id":2,"method":"status"}', RPC_INVALID_REQUEST, 2],
  ['object id', '{"jsonrpc":"2.0","id":{"a":1},"method":"status"}', RPC_INVALID_REQUEST, null],
  ['fraction id', '{"jsonrpc":"2.0","id":1.5,"method":"status"}', RPC_INVALID_REQUEST, null],
  ['huge string id', `{"jsonrpc":"2.0","id":"${'x'.repeat(129)}","method":"status"}`, RPC_INVALID_REQUEST, null],
  ['method not a string', '{"jsonrpc":"2.0","id":3,"method":5}', RPC_INVALID_REQUEST, 3],
  ['empty method', '{"jsonrpc":"2.0","id":4,"method":""}', RPC_INVALID_REQUEST, 4],
  ['long method', `{"jsonrpc":"2.0","id":5,"method":"${'m'.repeat(65)}"}`, RPC_INVALID_REQUEST, 5],
  ['extra member', '{"jsonrpc":"2.0","id":6,"method":"status","extra":1}', RPC_INVALID_REQUEST, 6],
];

for (const [label, line, code, id] of BAD) {
  test(`invalid: ${label}`, () => {
    const parsed = parseRequestLine(line);
    assert.is(parsed.kind, 'invalid');
    if (parsed.kind !== 'invalid') return;
    assert.is(parsed.id, id);
    const object = errorObjectOf(parsed.error);
    assert.is(object.code, code);
    assert.is(object.data.code, 'EINVAL');
    const reply = JSON.parse(failureLine(parsed.id, parsed.error));
    assert.equal(Object.keys(reply), ['jsonrpc', 'id', 'error']);
  });
}

test('100 000-deep nesting parses (or fails) without taking the process down', () => {
  const line = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
  const parsed = parseRequestLine(line);
  assert.is(parsed.kind, 'invalid');
});

test('engine errors map through rpcCodeOf with the errno name; bugs become internal errors', () => {
  assert.equal(errorObjectOf(new UblksnapError('ESRCH', 'unknown snapshot x')),
    { code: rpcCodeOf('ESRCH'), message: 'unknown snapshot x', data: { code: 'ESRCH' } });
  assert.is(rpcCodeOf('ESRCH'), -32003);
  const bug = errorObjectOf(new TypeError('x is undefined'));
  assert.is(bug.code, RPC_INTERNAL_ERROR);
  assert.is(bug.data.code, 'EIO');
  assert.match(bug.message, /internal error: x is undefined/);
});

test.run();
