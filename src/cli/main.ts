import { Command } from 'commander';
import { VERSION } from '../version.ts';
import { registerAuth } from './auth.ts';
import { registerCluster } from './cluster.ts';
import { registerCommons } from './commons.ts';
import { registerCoordinator } from './coordinator.ts';
import { registerDemo } from './demo.ts';
import { reportError } from './errors.ts';
import { registerHealth } from './health.ts';
import { registerKeys } from './keys.ts';
import { registerLedger } from './ledger.ts';
import { registerResults } from './results.ts';
import { registerSimRun } from './sim-run.ts';
import { registerSimStudy } from './sim-study.ts';
import { registerStatus } from './status.ts';
import { registerSubmit } from './submit.ts';
import { registerVerify } from './verify.ts';
import { registerWorker } from './worker.ts';
import { registerCancel, registerWorkers } from './workers.ts';

export function buildProgram(): Command {
  const program = new Command('plurigrid')
    .description('Plurigrid Simulation Commons: grid-epoch simulations, studies and the compute marketplace')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');
  const sim = program.command('sim').description('run simulations on this machine').exitOverride();
  registerSimRun(sim);
  registerSimStudy(sim);
  registerCoordinator(program);
  registerWorker(program);
  registerSubmit(program);
  registerStatus(program);
  registerResults(program);
  registerWorkers(program);
  registerCancel(program);
  registerVerify(program);
  registerKeys(program);
  registerAuth(program);
  registerCluster(program);
  registerHealth(program);
  registerLedger(program);
  registerCommons(program);
  registerDemo(program);
  for (const c of [...program.commands, ...sim.commands]) c.exitOverride();
  return program;
}

/** Runs the CLI and returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync([...argv]);
    // A command that finished but failed (a study that failed, a check that did not pass) says so in exitCode.
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    return reportError(err);
  }
}
