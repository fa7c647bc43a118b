// Goal: one error table answers every boundary consistently: errno, the
// block answer (what NBD and ublk clients are told), and the JSON-RPC code;
// system errors keep their code (a full filesystem stays ENOSPC) and only
// unknown ones become EIO.
// Method: walk the table; feed errors shaped like Node's and the addon's.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ALL_ERROR_CODES, blockErrnoOf, codeOfErrno, ERRNO_BY_CODE, ERROR_TABLE, errnoOf, fromSystemError, rpcCodeOf,
  UblksnapError,
} from '../../src/shared/errors';

/** The errors a block protocol carries (NBD's list; ublk maps the same ones to block statuses). */
const BLOCK_ERRNOS = [1, 5, 12, 22, 28, 75, 95, 108];

function systemError(code: string): Error {
  return Object.assign(new Error(`${code} happened`), { code });
}

test('every row answers a block client with an errno block protocols carry', () => {
  for (const code of ALL_ERROR_CODES) {
    const block = ERRNO_BY_CODE[ERROR_TABLE[code].block];
    assert.ok(BLOCK_ERRNOS.includes(block), `${code} → ${block}`);
    assert.is(blockErrnoOf(ERRNO_BY_CODE[code]), block, code);
    assert.is(codeOfErrno(ERRNO_BY_CODE[code]), code, `errno ${ERRNO_BY_CODE[code]} is ${code} alone`);
    assert.is(rpcCodeOf(code), -32000 - ERRNO_BY_CODE[code]);
  }
});

test('a full filesystem reaches block clients as ENOSPC, whatever the errno', () => {
  for (const code of ['ENOSPC', 'EDQUOT', 'EFBIG']) {
    assert.is(fromSystemError(systemError(code), 'volume write').code, code, `${code} keeps its code`);
    assert.is(blockErrnoOf(errnoOf(systemError(code))), 28, `${code} → ENOSPC`);
  }
  assert.is(blockErrnoOf(errnoOf(systemError('EROFS'))), 1, 'EROFS → EPERM');
});

test('aliases and unknown codes', () => {
  assert.is(errnoOf(systemError('EOPNOTSUPP')), 95);
  assert.is(errnoOf(systemError('EWOULDBLOCK')), 16);
  assert.is(errnoOf(systemError('EXDEV')), 5, 'unknown → EIO');
  assert.is(errnoOf('a string'), 5);
  assert.is(errnoOf(new UblksnapError('ESRCH', 'gone')), 3);
  assert.is(blockErrnoOf(0), 0, 'success stays success');
  assert.is(blockErrnoOf(9999), 5, 'an errno we do not know is EIO');
  assert.match(fromSystemError(systemError('EXDEV'), 'ctx').message, /^ctx: EXDEV happened/);
});

test.run();
