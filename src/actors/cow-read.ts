// The cow-read actor: a worker that serves requests to live volumes
// (cow/volume-requests.ts: copy-before-write, CBT mark, the volume write)
// from the volume request ring and from the sessions it hosts. Several
// share the ring; each is one IoActor (io-actor.ts).

import { workerData } from 'node:worker_threads';
import { handleVolumeRequest } from '../cow/volume-requests';
import { setThreadName } from '../native';
import { IoActor } from './io-actor';

setThreadName('ublksnap-cow');
IoActor.run((workerData as { ring: SharedArrayBuffer }).ring, handleVolumeRequest);
