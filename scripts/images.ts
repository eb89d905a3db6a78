// Builds the grid-epoch and worker images on the local engine without a registry and prints their IDs.
// Run it as `npm run images` (scripts/run.mjs starts dockerd first when it can).
import { buildImages } from '../src/worker/images.ts';

const started = performance.now();
try {
  const images = await buildImages({ onLog: (line) => process.stderr.write(`  ${line}\n`) });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  process.stdout.write(
    `base        ${images.base}\ngrid-epoch  ${images.gridEpoch}\nworker      ${images.worker}\n(${seconds} s)\n`,
  );
} catch (e) {
  process.stderr.write(`error: building images failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
}
