#!/usr/bin/env node
// The CLI is TypeScript run by Node's built-in type stripping (Node ≥ 22.18); npm scripts and npx put the
// project's pinned Node 24 first on PATH.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `plurigrid needs Node ≥ 22.18 (this is ${process.versions.node}); run it as "npx plurigrid", which uses the project's pinned Node 24.\n`,
  );
  process.exit(2);
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv);
