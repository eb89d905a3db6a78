import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { InputError, parseInput } from '../models/errors.ts';
import { Scenario } from '../models/scenario.ts';
import { Study } from '../models/study.ts';

/** Reads and parses a JSON file; a missing file or bad JSON is an InputError naming the file. */
export async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(`cannot read ${what}`, [
      `${path}: ${code === 'ENOENT' ? 'no such file' : String(code ?? e)}`,
    ]);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(`invalid ${what}`, [`${path}: not valid JSON (${(e as Error).message})`]);
  }
}

export async function loadScenarioFile(path: string): Promise<Scenario> {
  return parseInput(Scenario, await readJsonFile(path, 'scenario'), `invalid scenario ${path}`);
}

/** A study with its base scenario as raw JSON (sweeps are applied before validation). */
export interface LoadedStudy {
  study: Study;
  baseScenario: unknown;
}

export async function loadStudyFile(path: string): Promise<LoadedStudy> {
  const study = parseInput(Study, await readJsonFile(path, 'study'), `invalid study ${path}`);
  const baseScenario =
    typeof study.scenario === 'string'
      ? await readJsonFile(resolve(dirname(path), study.scenario), 'scenario')
      : study.scenario;
  return { study, baseScenario };
}

/**
 * Writes every file to a temporary name, then renames each into place (write-file-atomic): a reader sees either
 * the old file or the whole new one, and a failure before this point leaves the directory untouched.
 */
export async function writeFilesAtomic(dir: string, files: Record<string, string>): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const [name, content] of Object.entries(files)) {
    const path = join(dir, name);
    await writeFileAtomic(path, content);
    written.push(path);
  }
  return written;
}
