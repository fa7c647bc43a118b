// The daemon's one coupling to the engine implementation: how to start it.
// Everything else in src/daemon and src/ipc speaks EngineControl (api.ts).
// Tests may pass their own StartEngine to Daemon.start.

import type { EngineControl, EngineOptions } from '../engine/api';
import { Engine } from '../engine/engine';

export type StartEngine = (options: EngineOptions) => Promise<EngineControl>;

export const startEngine: StartEngine = (options) => Engine.start(options);
