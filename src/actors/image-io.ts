// The image-io actor: a worker that serves requests to snapshot images
// (cow/image-requests.ts) from the image request ring and from the
// sessions it hosts. Each is one IoActor (io-actor.ts).

import { workerData } from 'node:worker_threads';
import { handleImageRequest } from '../cow/image-requests';
import { setThreadName } from '../native';
import { IoActor } from './io-actor';

setThreadName('ublksnap-image');
IoActor.run((workerData as { ring: SharedArrayBuffer }).ring, handleImageRequest);
