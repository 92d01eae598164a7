/**
 * A worker as a thread of the coordinator's process (`coordinator --spawn` where the native addon
 * is not built; coordinator/spawn.ts): the worker command on the arguments it was given, its
 * same-host regions asked of the coordinator's thread (worker/same-host.ts).
 */
import { workerData } from 'node:worker_threads';
import type { WorkerThreadData } from '../shared/wire/thread-regions.js';
import { main } from './worker.js';

main([process.execPath, 'worker', ...(workerData as WorkerThreadData).args]);
