#!/usr/bin/env node
// Bootstrap for npm scripts. It runs under whatever Node the machine has (even an end-of-life one), installs the
// locked dependencies when node_modules is missing or stale — which brings the pinned Node 24 — and then runs the
// task with node_modules/.bin first on PATH, so everything after this point runs on the pinned Node.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'node_modules', '.bin');
const env = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` };

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env, ...options });
  if (r.error) {
    console.error(`error: cannot run ${cmd}: ${r.error.message}`);
    return 1;
  }
  return r.status ?? 1;
}

function ensureDependencies() {
  const marker = join(root, 'node_modules', '.package-lock.json');
  const lock = join(root, 'package-lock.json');
  const stale = !existsSync(marker) || statSync(lock).mtimeMs > statSync(marker).mtimeMs;
  if (!stale && existsSync(join(bin, 'node'))) return;
  console.error('plurigrid: installing dependencies (npm ci)…');
  const status = run('npm', ['ci', '--no-audit', '--no-fund'], { env: process.env });
  if (status !== 0) {
    console.error('error: npm ci failed; check that the npm registry is reachable');
    process.exit(status);
  }
}

const [task, ...rest] = process.argv.slice(2);
const tasks = {
  // Type check, lint and the whole vitest suite; every step runs so one failure does not hide another.
  test: () => {
    const steps = [
      ['tsc', ['--noEmit']],
      ['biome', ['check', '.']],
      ['vitest', ['run', ...rest]],
    ];
    let failed = 0;
    for (const [cmd, args] of steps) {
      const status = run(join(bin, cmd), args);
      if (status !== 0) {
        console.error(`plurigrid: ${cmd} failed (exit ${status})`);
        failed = failed || status;
      }
    }
    return failed;
  },
  demo: () => run(join(bin, 'node'), [join(root, 'bin', 'plurigrid.js'), 'demo', ...rest]),
  'bench:sim': () => run(join(bin, 'node'), [join(root, 'bench', 'sim.ts'), ...rest]),
};

if (!tasks[task]) {
  console.error(`usage: node scripts/run.mjs <${Object.keys(tasks).join('|')}> [args…]`);
  process.exit(2);
}
ensureDependencies();
process.exit(tasks[task]());
