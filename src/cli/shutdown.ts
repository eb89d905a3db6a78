/** Runs `fn` once on the first SIGINT or SIGTERM; a second signal exits at once. */
export function onShutdown(fn: (signal: string) => Promise<void>): void {
  let started = false;
  const handler = (signal: NodeJS.Signals) => {
    if (started) process.exit(130);
    started = true;
    fn(signal).then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`error during shutdown: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}
