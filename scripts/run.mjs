#!/usr/bin/env node
// Bootstrap for npm scripts. It runs under whatever Node the machine has (even an end-of-life one), installs the
// locked dependencies when node_modules is missing or stale — which brings the pinned Node 24 — and then runs the
// task with node_modules/.bin first on PATH, so everything after this point runs on the pinned Node.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
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

// Where system binaries live, whatever the caller's PATH.
const SYSTEM_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin'];
const findBinary = (name) =>
  [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...SYSTEM_DIRS]
    .map((dir) => join(dir, name))
    .find((p) => existsSync(p));

// Installs a Debian package when we may (root with apt-get), running `apt-get update` first if the install fails.
// Returns whether it is installed now; otherwise says how to install it.
function aptInstall(pkg) {
  const aptGet = ['/usr/bin/apt-get', '/usr/sbin/apt-get'].find((p) => existsSync(p));
  if (process.getuid?.() !== 0 || !aptGet) {
    console.error(`plurigrid: ${pkg} is missing; install it with \`sudo apt-get install ${pkg}\``);
    return false;
  }
  console.error(`plurigrid: installing ${pkg} (apt-get install -y ${pkg})…`);
  const quiet = {
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    env: { ...env, DEBIAN_FRONTEND: 'noninteractive' },
  };
  let r = spawnSync(aptGet, ['install', '-y', '--no-install-recommends', pkg], quiet);
  if (r.status !== 0) {
    spawnSync(aptGet, ['update'], quiet);
    r = spawnSync(aptGet, ['install', '-y', '--no-install-recommends', pkg], quiet);
  }
  if (r.status !== 0) {
    const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-5).join('\n');
    console.error(`plurigrid: apt-get install -y ${pkg} failed:\n${tail}`);
    return false;
  }
  return true;
}

// The embedded NATS default and the integration tests need nats-server (Debian's package).
function ensureNatsServer() {
  if (!findBinary('nats-server')) aptInstall('nats-server');
}

// How this project runs the engine: no bridge and no iptables rules, since job containers get no network at all.
const DOCKERD_ARGS = ['--bridge=none', '--iptables=false', '--ip-masq=false'];

function sleepMs(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// Whether a child we cannot reap yet (this loop blocks the event loop) is still running: a zombie has exited.
function alive(pid) {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return !existsSync('/proc/self'); // no /proc: cannot tell, keep waiting
  }
}

// Image builds and the Docker tests need the engine. When `docker info` fails and we may start it (root, dockerd
// installed), start it in the background with its log under .plurigrid/ and wait until it answers. Returns true
// when the engine answers; otherwise says what to do and returns false.
function ensureDockerEngine({ install = false } = {}) {
  // Debian's docker.io brings dockerd, containerd and runc (and a docker CLI when the machine has none).
  if (install && !findBinary('dockerd')) aptInstall('docker.io');
  const info = () =>
    spawnSync('docker', ['info'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env });
  const first = info();
  if (first.status === 0) return true;
  if (first.error) {
    console.error(`plurigrid: the docker CLI is missing (${first.error.message}); install docker.io`);
    return false;
  }
  const dockerd = findBinary('dockerd');
  if (!dockerd || process.getuid?.() !== 0) {
    const why = (first.stderr ?? '').trim().split('\n').at(-1);
    console.error(
      `plurigrid: the Docker engine does not answer (${why}); start it as root with \`dockerd ${DOCKERD_ARGS.join(' ')}\``,
    );
    return false;
  }
  const logPath = join(root, '.plurigrid', 'dockerd.log');
  mkdirSync(dirname(logPath), { recursive: true });
  const log = openSync(logPath, 'a');
  const child = spawn(dockerd, DOCKERD_ARGS, {
    detached: true,
    stdio: ['ignore', log, log],
    // containerd and runc live in the sbin/bin dirs, which a user's PATH may lack.
    env: {
      ...process.env,
      PATH: `${process.env.PATH ?? ''}${delimiter}/usr/sbin${delimiter}/usr/bin${delimiter}/sbin${delimiter}/bin`,
    },
  });
  child.unref();
  closeSync(log);
  console.error(`plurigrid: started dockerd (pid ${child.pid}, log ${logPath}); waiting for it to answer…`);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    sleepMs(500);
    if (info().status === 0) return true;
    if (!alive(child.pid)) {
      const tail = readFileSync(logPath, 'utf8').trim().split('\n').slice(-5).join('\n');
      console.error(`plurigrid: dockerd exited during start-up; the end of ${logPath}:\n${tail}`);
      return false;
    }
  }
  console.error(`plurigrid: dockerd did not answer within 60 s; see ${logPath}`);
  return false;
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
  'bench:dispatch': () => run(join(bin, 'node'), [join(root, 'bench', 'dispatch.ts'), ...rest]),
  'bench:restart': () => run(join(bin, 'node'), [join(root, 'bench', 'restart.ts'), ...rest]),
  // The verification policy simulated at scale: no NATS, no Docker.
  'bench:verify': () => run(join(bin, 'node'), [join(root, 'bench', 'verify.ts'), ...rest]),
  'bench:ledger': () => run(join(bin, 'node'), [join(root, 'bench', 'ledger.ts'), ...rest]),
  // Placement at 1,000–100,000 simulated workers with the coordinator's pure code: no NATS, no Docker.
  'bench:placement': () => run(join(bin, 'node'), [join(root, 'bench', 'placement.ts'), ...rest]),
  'bench:failover': () => run(join(bin, 'node'), [join(root, 'bench', 'failover.ts'), ...rest]),
  // A simulated day of the commons with the coordinator's pure scheduling code: no NATS, no Docker.
  'bench:commons': () => run(join(bin, 'node'), [join(root, 'bench', 'commons.ts'), ...rest]),
  // Builds plurigrid/grid-epoch and plurigrid/worker on the local engine (no registry) and prints their IDs.
  images: () =>
    ensureDockerEngine() ? run(join(bin, 'node'), [join(root, 'scripts', 'images.ts'), ...rest]) : 1,
};

if (!tasks[task]) {
  console.error(`usage: node scripts/run.mjs <${Object.keys(tasks).join('|')}> [args…]`);
  process.exit(2);
}
ensureDependencies();
if (
  task === 'test' ||
  task === 'demo' ||
  (task.startsWith('bench:') && !['bench:verify', 'bench:placement', 'bench:commons'].includes(task))
)
  ensureNatsServer();
// The Docker tests fail (never skip) without an engine, and the demo should show the sandbox, so both get one
// installed and started when it can be (root with apt); where it cannot, the demo falls back to the process executor.
if (task === 'test' || task === 'demo') ensureDockerEngine({ install: true });
if (task === 'bench:dispatch') ensureDockerEngine();
process.exit(tasks[task]());
