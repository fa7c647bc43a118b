// Goal: what people type is parsed the way upstream's tool parses it, and
// refused with a message naming the option and showing what is accepted:
// sizes with K/M/G/T suffixes, SECTOR:COUNT ranges, snapshot ids, -d as a
// path or a name, multitoken options; and output is key=value or JSON.
// Method: tables of inputs and expected values or messages.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCommandArgs, type OptionSpec } from '../../src/cli/args';
import { formatBytes, keyValueInline, keyValueLines } from '../../src/cli/output';
import { deviceArgument, parseInteger, parseSectorRange, parseSize, parseSnapshotId, pathArgument } from '../../src/cli/values';
import { UblksnapError } from '../../src/shared/errors';

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    assert.instance(error, UblksnapError);
    assert.is((error as UblksnapError).code, 'EINVAL');
    return (error as Error).message;
  }
  throw new Error('accepted');
}

const SIZES: [string, number][] = [
  ['0', 0], ['512', 512], ['1073741824', 2 ** 30],
  ['1K', 1024], ['4k', 4096], ['64KiB', 65536], ['64KB', 65536],
  ['512M', 512 * 2 ** 20], ['1G', 2 ** 30], ['1.5G', 1.5 * 2 ** 30], ['2T', 2 * 2 ** 40], ['1 G', 2 ** 30],
  ['0.5K', 512], ['8191T', 8191 * 2 ** 40],
];
for (const [text, bytes] of SIZES) {
  test(`size ${JSON.stringify(text)} is ${bytes} bytes`, () => {
    assert.is(parseSize(text, '-l'), bytes);
  });
}

test('bad sizes name the option and show the accepted forms', () => {
  for (const text of ['', 'abc', '-1', '1e9', '12Q', '1.2.3', 'G', '0x10', '10 M B']) {
    assert.match(refusal(() => parseSize(text, '-l')), /^-l: expected a size like 1073741824, 512M, 1G or 1\.5T \(suffixes K, M, G, T are powers of 1024\), got /);
  }
  assert.match(refusal(() => parseSize('1.5', '-l')), /^-l: "1\.5" is not a whole number of bytes$/);
  assert.match(refusal(() => parseSize('8192T', '-l')), /too large/);
  assert.match(refusal(() => parseSize('99999999999999999', '-l')), /too large/);
});

test('sector ranges, integers, ids', () => {
  assert.equal(parseSectorRange('0:8', '-r'), { sector: 0, count: 8 });
  assert.equal(parseSectorRange('2048:1', '-r'), { sector: 2048, count: 1 });
  assert.match(refusal(() => parseSectorRange('8', '-r')), /^-r: expected SECTOR:COUNT such as 2048:16, got "8"$/);
  assert.match(refusal(() => parseSectorRange('0:0', '-r')), /COUNT must be at least 1/);
  assert.match(refusal(() => parseSectorRange('-1:4', '-r')), /SECTOR:COUNT/);
  assert.is(parseInteger('1000', '-t', 3_600_000), 1000);
  assert.match(refusal(() => parseInteger('3600001', '-t', 3_600_000)), /^-t: must be at most 3600000, got 3600001$/);
  assert.match(refusal(() => parseInteger('1.5', '-t', 10)), /whole number/);
  assert.is(parseSnapshotId('5F0C3A1E-8D2B-4C6F-9A7E-0B1C2D3E4F50', '-i'), '5f0c3a1e-8d2b-4c6f-9a7e-0b1c2d3e4f50');
  assert.match(refusal(() => parseSnapshotId('5f0c3a1e', '-i')), /^-i: expected a snapshot id \(UUID\)/);
});

test('-d: a bare word is a volume name, anything with a slash a path made absolute', () => {
  assert.is(deviceArgument('demo', '/home/u'), 'demo');
  assert.is(deviceArgument('demo.img', '/home/u'), 'demo.img');
  assert.is(deviceArgument('./demo.img', '/home/u'), '/home/u/demo.img');
  assert.is(deviceArgument('../x/demo.img', '/home/u'), '/home/x/demo.img');
  assert.is(deviceArgument('/dev/sdb', '/home/u'), '/dev/sdb');
  assert.is(pathArgument('demo.img', '-d', '/home/u'), '/home/u/demo.img');
});

const SPECS: OptionSpec[] = [
  { name: 'device', short: 'd', type: 'string', multiple: true, multitoken: true, help: '' },
  { name: 'file', short: 'f', type: 'string', help: '' },
  { name: 'ranges', short: 'r', type: 'string', multiple: true, multitoken: true, help: '' },
  { name: 'force', type: 'boolean', help: '' },
];

test('multitoken options take the values after them, as boost::program_options does', () => {
  const values = parseCommandArgs(['-d', '/dev/a', '/dev/b', '-f', 'x', '-d', 'c', '-r', '0:8', '16:8', '--force', '-j'], SPECS);
  assert.equal(values.device, ['/dev/a', '/dev/b', 'c']);
  assert.is(values.file, 'x');
  assert.equal(values.ranges, ['0:8', '16:8']);
  assert.is(values.force, true);
  assert.is(values.json, true);
  assert.equal(parseCommandArgs(['--device=a', 'b'], SPECS).device, ['a', 'b']);
  assert.equal(parseCommandArgs(['--socket', '/s', '--json'], SPECS).socket, '/s');
});

test('stray arguments, unknown options and missing values are refused in one line', () => {
  assert.match(refusal(() => parseCommandArgs(['-f', 'x', 'stray'], SPECS)), /^unexpected argument "stray"$/);
  assert.match(refusal(() => parseCommandArgs(['stray'], SPECS)), /^unexpected argument "stray"$/);
  assert.match(refusal(() => parseCommandArgs(['--nope'], SPECS)), /^unknown option --nope$/);
  assert.match(refusal(() => parseCommandArgs(['-q'], SPECS)), /^Unknown option '-q'/);
  const missing = refusal(() => parseCommandArgs(['-f'], SPECS));
  assert.not.match(missing, /\n/);
  assert.match(refusal(() => parseCommandArgs(['--force=yes'], SPECS)), /force/);
});

test('long options abbreviate to unambiguous prefixes, as boost::program_options allows', () => {
  const values = parseCommandArgs(['--dev', 'a', '--fi=x', '--fo'], SPECS);
  assert.equal([values.device, values.file, values.force], [['a'], 'x', true]);
  // An exact name wins over being a prefix of another (--json is also a prefix of nothing else).
  assert.is(parseCommandArgs(['--json'], SPECS).json, true);
  assert.match(refusal(() => parseCommandArgs(['--f', 'x'], SPECS)), /^option --f is ambiguous: it could be --file or --force$/);
  // After '--' nothing is an option.
  assert.match(refusal(() => parseCommandArgs(['--', '--dev'], SPECS)), /unexpected argument "--dev"/);
});

test('a negative number after a string option is its value, refused by the value\'s own check', () => {
  assert.is(parseCommandArgs(['-f', '-5'], SPECS).file, '-5');
  assert.is(parseCommandArgs(['--file', '-5'], SPECS).file, '-5');
});

test('output: key=value lines, inline records with quoting, JSON with the same keys', () => {
  assert.is(keyValueLines({ error_code: 0, image: '', nbd: null, ids: ['a', 'b'] }), 'error_code=0\nimage=\nnbd=\nids=a,b\n');
  assert.is(keyValueInline({ volume: 'v', size: '1.0 GiB', ok: true }), 'volume=v size="1.0 GiB" ok=true');
  assert.is(formatBytes(17), '17 B');
  assert.is(formatBytes(1536), '1.5 KiB');
  assert.is(formatBytes(2 ** 30), '1.0 GiB');
  assert.is(formatBytes(100 * 2 ** 20), '100 MiB');
});

test.run();
