// Builds the job and worker images with no registry: the runner and CLI are bundled with esbuild, and the base is
// node:24-bookworm-slim only if it is already present locally — otherwise a minimal base imported from the Node
// binary running this code (the project's pinned Node 24) and the shared libraries it links. Nothing is pulled.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Dockerode from 'dockerode';

export const DEFAULT_BASE_IMAGE = 'node:24-bookworm-slim';
export const LOCAL_BASE_REPO = 'plurigrid/node-base';
export const GRID_EPOCH_REPO = 'plurigrid/grid-epoch';
export const WORKER_REPO = 'plurigrid/worker';
const LABEL_NODE = 'org.plurigrid.node-version';
const LABEL_HASH = 'org.plurigrid.content-hash';
const LABEL_VERSION = 'org.plurigrid.version';
/** Bump when the rootfs layout below changes, so old bases are not reused. */
const ROOTFS_FORMAT = 1;

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface ImageOptions {
  docker?: Dockerode;
  /** Progress lines (build steps, import status). */
  onLog?: (line: string) => void;
}

export interface BuiltImages {
  /** Image IDs (sha256:…): jobs pin these, so every replica runs the same bytes. */
  gridEpoch: string;
  worker: string;
  /** The base both were built FROM (a tag). */
  base: string;
}

/** One file of the local base's rootfs: copied from the host (dereferenced) or written from text. */
interface RootfsEntry {
  path: string;
  mode: number;
  from?: string;
  text?: string;
}

// Unprivileged `node` user 1000:1000, as in the official node images, so `USER 1000:1000` has a name.
const PASSWD =
  'root:x:0:0:root:/root:/usr/sbin/nologin\nnode:x:1000:1000:node:/home/node:/usr/sbin/nologin\n';
const GROUP = 'root:x:0:\nnode:x:1000:\n';

/** Absolute paths of the shared libraries (and the dynamic loader) a binary links, from `ldd`. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await promisify(execFile)('ldd', [binary]);
  const libs = new Set<string>();
  for (const line of stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has
    // no file.
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m) libs.add(m[1]!);
  }
  if (libs.size === 0)
    throw new Error(`ldd ${binary} listed no libraries; is it a dynamically linked ELF binary?`);
  return [...libs].sort();
}

async function rootfsEntries(): Promise<RootfsEntry[]> {
  const node = process.execPath;
  const libs = await sharedLibraries(node);
  return [
    { path: '/usr/local/bin/node', mode: 0o755, from: node },
    ...libs.map((lib) => ({ path: lib, mode: 0o755, from: lib })),
    { path: '/etc/passwd', mode: 0o644, text: PASSWD },
    { path: '/etc/group', mode: 0o644, text: GROUP },
  ];
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Hash of everything that goes into the rootfs: an unchanged Node and libraries reuse the imported base. */
async function contentHash(entries: readonly RootfsEntry[]): Promise<string> {
  const parts = [`format ${ROOTFS_FORMAT}`];
  for (const e of entries) {
    const content = e.from ? await sha256File(e.from) : createHash('sha256').update(e.text!).digest('hex');
    parts.push(`${e.path} ${e.mode.toString(8)} ${content}`);
  }
  return createHash('sha256').update(parts.join('\n')).digest('hex');
}

async function imageLabels(docker: Dockerode, ref: string): Promise<Record<string, string> | null> {
  try {
    return (await docker.getImage(ref).inspect()).Config.Labels ?? {};
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 404) return null;
    throw e;
  }
}

/** Reads a build/import progress stream to its end; throws the engine's error message if there is one. */
async function followProgress(
  docker: Dockerode,
  stream: NodeJS.ReadableStream,
  onLog?: (line: string) => void,
): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, events: Array<Record<string, unknown>>) => {
        if (err) return reject(err);
        const failed = events.find((e) => e.error);
        if (failed) return reject(new Error(String(failed.error).trim()));
        resolve(events);
      },
      (event: Record<string, unknown>) => {
        const line = String(event.stream ?? event.status ?? '').trim();
        if (line) onLog?.(line);
      },
    );
  });
}

/** Runs `tar` over a directory and returns its stdout, with files owned by root and stable metadata. */
function tarDirectory(dir: string): { stream: NodeJS.ReadableStream; done: Promise<void> } {
  const tar = spawn(
    'tar',
    ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-C', dir, '-c', '.'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  tar.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const done = new Promise<void>((resolve, reject) => {
    tar.once('error', (e) => reject(new Error(`cannot run tar: ${e.message}`)));
    tar.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`tar exited with code ${code}: ${stderr.trim()}`)),
    );
  });
  return { stream: tar.stdout, done };
}

/**
 * The base image to build FROM: node:24-bookworm-slim if it is already present locally (never pulled), else
 * `plurigrid/node-base:<node version>`, imported from a minimal rootfs unless an image with the same content hash
 * already exists.
 */
export async function ensureLocalBase(options: ImageOptions = {}): Promise<string> {
  const docker = options.docker ?? new Dockerode();
  const log = options.onLog ?? (() => {});
  if (await imageLabels(docker, DEFAULT_BASE_IMAGE)) {
    log(`base: using local ${DEFAULT_BASE_IMAGE}`);
    return DEFAULT_BASE_IMAGE;
  }
  const version = process.versions.node;
  if (Number(version.split('.')[0]) < 24) {
    throw new Error(
      `the local base copies the running Node binary, and this is Node ${version}; run "npm run images", which uses the project's pinned Node 24`,
    );
  }
  const tag = `${LOCAL_BASE_REPO}:${version}`;
  const entries = await rootfsEntries();
  const hash = await contentHash(entries);
  if ((await imageLabels(docker, tag))?.[LABEL_HASH] === hash) {
    log(`base: reusing ${tag} (content ${hash.slice(0, 12)})`);
    return tag;
  }

  log(`base: importing ${tag} from ${process.execPath} and ${entries.length - 3} shared libraries`);
  const dir = await mkdtemp(join(tmpdir(), 'plurigrid-rootfs-'));
  try {
    for (const e of entries) {
      const target = join(dir, e.path);
      await mkdir(dirname(target), { recursive: true });
      // copyFile follows symlinks: the rootfs gets the library bytes at the path the loader looks them up by.
      if (e.from) await copyFile(e.from, target);
      else await writeFile(target, e.text!);
      await chmod(target, e.mode);
    }
    // mkdtemp made the dir 0700; as the image's / it must be traversable by the unprivileged user.
    await chmod(dir, 0o755);
    for (const d of ['app', 'home/node']) await mkdir(join(dir, d), { recursive: true });
    await mkdir(join(dir, 'tmp'));
    await chmod(join(dir, 'tmp'), 0o1777);

    const tar = tarDirectory(dir);
    const response = await docker.importImage(tar.stream, {
      repo: LOCAL_BASE_REPO,
      tag: version,
      message: `plurigrid local base: Node ${version}`,
      changes: [
        'ENV PATH=/usr/local/bin:/usr/bin:/bin',
        `ENV NODE_VERSION=${version}`,
        `LABEL ${LABEL_NODE}=${version} ${LABEL_HASH}=${hash}`,
      ],
    });
    await Promise.all([followProgress(docker, response, log), tar.done]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  if ((await imageLabels(docker, tag))?.[LABEL_HASH] !== hash) {
    throw new Error(`docker import of ${tag} finished but the image does not carry ${LABEL_HASH}=${hash}`);
  }
  return tag;
}

// CommonJS packages inside an ESM bundle still call require() for Node built-ins and read __dirname (ssh2, under
// dockerode, does so as it loads); give them both.
const CJS_SHIM = [
  "import { createRequire as __pgCreateRequire } from 'node:module';",
  "import { fileURLToPath as __pgFileURLToPath } from 'node:url';",
  "import { dirname as __pgDirname } from 'node:path';",
  'const require = __pgCreateRequire(import.meta.url);',
  'const __filename = __pgFileURLToPath(import.meta.url);',
  'const __dirname = __pgDirname(__filename);',
].join('\n');

/**
 * Left out of bundles: esbuild itself (only images.ts imports it, lazily) and native addons that their packages
 * load inside try/catch as optional speed-ups (ssh2's cpu-features and sshcrypto.node); they are not built here.
 */
const EXTERNAL = ['esbuild', 'cpu-features', '*.node'];

/** Bundles one entry point into `outfile` (ESM, Node 24, every package inlined). */
export async function bundle(entry: string, outfile: string): Promise<void> {
  // Imported lazily: esbuild is a build-time tool, not something the worker needs at run time.
  const esbuild = await import('esbuild');
  await esbuild.build({
    entryPoints: [join(root, entry)],
    outfile,
    bundle: true,
    packages: 'bundle',
    platform: 'node',
    format: 'esm',
    target: 'node24',
    minify: true,
    legalComments: 'none',
    banner: { js: CJS_SHIM },
    external: EXTERNAL,
    logLevel: 'error',
  });
}

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Builds images/<name>/Dockerfile with one bundle as its context; returns the image ID. */
async function buildOne(
  docker: Dockerode,
  spec: { name: string; entry: string; bundle: string; tag: string; base: string; version: string },
  log: (line: string) => void,
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `plurigrid-${spec.name}-`));
  try {
    await copyFile(join(root, 'images', spec.name, 'Dockerfile'), join(dir, 'Dockerfile'));
    await bundle(spec.entry, join(dir, spec.bundle));
    log(`${spec.name}: building ${spec.tag} FROM ${spec.base}`);
    const stream = await docker.buildImage(
      { context: dir, src: ['Dockerfile', spec.bundle] },
      {
        t: spec.tag,
        buildargs: { BASE_IMAGE: spec.base },
        labels: { [LABEL_VERSION]: spec.version },
        pull: false,
        rm: true,
        forcerm: true,
      },
    );
    const events = await followProgress(docker, stream, (line) => log(`${spec.name}: ${line}`));
    const aux = events.map((e) => (e.aux as { ID?: string } | undefined)?.ID).find(Boolean);
    return aux ?? (await docker.getImage(spec.tag).inspect()).Id;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Builds plurigrid/grid-epoch:<version> and plurigrid/worker:<version>. Unchanged sources give the same bundles, so
 * Docker's layer cache returns the same image IDs on a rebuild.
 */
export async function buildImages(options: ImageOptions = {}): Promise<BuiltImages> {
  const docker = options.docker ?? new Dockerode();
  const log = options.onLog ?? (() => {});
  const base = await ensureLocalBase({ docker, onLog: log });
  const version = await packageVersion();
  const gridEpoch = await buildOne(
    docker,
    {
      name: 'grid-epoch',
      entry: 'src/worker/epoch-runner.ts',
      bundle: 'epoch-runner.mjs',
      tag: `${GRID_EPOCH_REPO}:${version}`,
      base,
      version,
    },
    log,
  );
  const worker = await buildOne(
    docker,
    {
      name: 'worker',
      entry: 'bin/plurigrid.js',
      bundle: 'plurigrid.mjs',
      tag: `${WORKER_REPO}:${version}`,
      base,
      version,
    },
    log,
  );
  return { gridEpoch, worker, base };
}
