/**
 * `npm run build:judge`: train the judge of the embedded digits with the classifier's default
 * recipe and write it to eval/judge/, where the package ships it (eval/classifier.ts,
 * shippedJudgeDir). Run it when the architecture, the recipe or the embedded digits change (the
 * file's key then no longer matches, and the judge is trained at a run's start instead).
 */
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { die, isMain } from '../cli/args.js';
import { initBackend } from '../shared/backend/choose.js';
import { loadMnist } from '../shared/data/mnist.js';
import { getClassifier, judgeFileName, judgeKey, shippedJudgeDir } from '../eval/classifier.js';

export async function buildJudge(log: (line: string) => void): Promise<string> {
  const backend = await initBackend('auto', { log });
  log(`backend ${backend.name} (${backend.detail})`);
  const data = loadMnist();
  const dir = shippedJudgeDir();
  const keep = judgeFileName(judgeKey(data));
  // Judges of older recipes or data go: only the one that can match is shipped.
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.bin') && f !== keep)) unlinkSync(join(dir, f));
  const net = await getClassifier({ data, cacheDir: dir, shipped: false, log });
  net.dispose();
  return join(dir, keep);
}

if (isMain(import.meta.url)) buildJudge((l) => process.stderr.write(`${l}\n`)).then((f) => console.log(f), (e) => die('build-judge', e));
