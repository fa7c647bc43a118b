// The daemon's one coupling to the engine implementation: how to start it.
// Everything else in src/daemon and src/ipc speaks EngineControl (api.ts).
// Tests may pass their own StartEngine to Daemon.start.

import type { EngineControl, EngineOptions } from '../engine/api';
import { UblksnapError } from '../shared/errors';

export type StartEngine = (options: EngineOptions) => Promise<EngineControl>;

interface EngineModule {
  Engine: { start(options: EngineOptions): Promise<EngineControl> };
}

export const startEngine: StartEngine = async (options) => {
  // Until src/engine/engine.ts lands on main, resolve it at run time so the
  // rest of the daemon builds and its other layers can be tested.
  const module_path = '../engine/engine';
  let engine_module: EngineModule;
  try {
    engine_module = require(module_path) as EngineModule;
  } catch (error) {
    // MODULE_NOT_FOUND: this build has no engine yet.
    if ((error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      throw new UblksnapError('ENOTSUP', 'this build has no engine (src/engine/engine.ts is missing)');
    }
    throw error;
  }
  return engine_module.Engine.start(options);
};
