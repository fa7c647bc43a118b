// Goal: the profile summary charges each sample's time to the function on
// top of the stack (self time), with file and line, largest first.
// Method: a three-node V8 CPU profile written by hand.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { selfTimes } from '../../bench/profile-summary';

const profile = suite('profile summary');

profile('self time per function from samples and time deltas', () => {
  const frame = (functionName: string, url: string, lineNumber: number) => ({ functionName, url, lineNumber });
  const { total_ms, functions } = selfTimes({
    nodes: [
      { id: 1, callFrame: frame('(root)', '', -1), children: [2, 3] },
      { id: 2, callFrame: frame('wake', 'file:///work/x/dist/src/shared/ring.js', 220) },
      { id: 3, callFrame: frame('(garbage collector)', '', -1) },
    ],
    startTime: 0, endTime: 6000,
    samples: [2, 2, 3, 2],
    timeDeltas: [1000, 2000, 1000, 2000],
  });
  assert.is(total_ms, 6);
  assert.equal(functions, [
    { name: 'wake', file: 'src/shared/ring.js:221', ms: 5 },
    { name: '(garbage collector)', file: '', ms: 1 },
  ]);
});

profile.run();
