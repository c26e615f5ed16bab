#!/usr/bin/env node
// @ts-check
/**
 * `npm run build`: gets the mfa-step component, transpiles it with jco into `dist/<world>/`, and
 * records what was built in `dist/<world>/manifest.json` (the component's SHA-256, the core
 * modules, the imports the transpiled module reads).
 *
 * Where the component comes from, first match wins:
 *   1. `MFA_STEP_WASM=<file>` (and `MFA_STEP_CONFORMANCE_WASM=<file>` for the conformance kit);
 *   2. inside the mfa-step repository: `cargo run -q -p host-harness --release -- component <world> --out <file>`.
 * Usage: node scripts/build.mjs [plugin] [conformance]   (default: both; the conformance kit is
 * what a host author runs over their own backends, see test/conformance.test.js)
 *
 * `dist/` is git-ignored but shipped in the npm tarball (package.json `files`), so installing the
 * package needs no Rust.
 */

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(root, '../..');
const require = createRequire(import.meta.url);

/** @param {string} msg */
function die(msg) {
  process.stderr.write(`build: ${msg}\n`);
  process.exit(1);
}

/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {string} cwd
 */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error) die(`${cmd} could not start: ${r.error.message}`);
  if (r.status !== 0) die(`${cmd} ${args.join(' ')} failed (exit ${r.status})`);
}

/** @param {string} world */
async function getWasm(world) {
  const env = world === 'plugin' ? 'MFA_STEP_WASM' : `MFA_STEP_${world.toUpperCase()}_WASM`;
  const given = process.env[env];
  if (given) {
    if (!existsSync(given)) die(`${env}=${given}: no such file`);
    return { path: resolve(given), temp: null };
  }
  if (!existsSync(join(repo, 'Cargo.toml')) || !existsSync(join(repo, 'host-harness'))) {
    die(`not inside the mfa-step repository: set ${env} to the component .wasm`);
  }
  const temp = await mkdtemp(join(tmpdir(), 'mfa-step-build-'));
  const out = join(temp, `${world}.wasm`);
  process.stderr.write(`build: cargo run -q -p host-harness --release -- component ${world} --out ${out}\n`);
  run('cargo', ['run', '-q', '-p', 'host-harness', '--release', '--', 'component', world, '--out', out], repo);
  return { path: out, temp };
}

/** @param {string} world */
async function build(world) {
  const { path: wasm, temp } = await getWasm(world);
  const bytes = await readFile(wasm);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const outDir = join(root, 'dist', world);
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  const name = `mfa_step_${world}`;
  const input = join(outDir, `${name}.wasm`);
  await copyFile(wasm, input);
  if (temp) await rm(temp, { recursive: true, force: true });
  const jcoDist = dirname(require.resolve('@bytecodealliance/jco'));
  const jco = join(jcoDist, 'jco.js');
  run(process.execPath, [jco, 'transpile', input, '--instantiation', 'async', '--name', name, '--quiet', '-o', outDir], root);
  await rm(input);
  const files = await readdir(outDir);
  const js = `${name}.js`;
  if (!files.includes(js)) die(`jco wrote no ${js}`);
  const source = await readFile(join(outDir, js), 'utf8');
  const imports = [...new Set([...source.matchAll(/imports\['([^']+)'\]/g)].map((m) => m[1]))].sort();
  const coreModules = files.filter((f) => f.endsWith('.wasm')).sort();
  const jcoVersion = JSON.parse(await readFile(join(jcoDist, '..', 'package.json'), 'utf8')).version;
  const manifest = { world, sha256, js, coreModules, imports, jco: jcoVersion };
  await writeFile(join(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  process.stderr.write(`build: dist/${world}/ from a component with SHA-256 ${sha256}\n`);
  const extra = imports.filter((i) => !i.startsWith('mfa-step:') && i !== 'wasi:clocks/wall-clock' && i !== 'wasi:random/random');
  if (extra.length > 0) die(`the ${world} component imports beyond its world: ${extra.join(', ')} (this host supplies the world only)`);
}

const worlds = process.argv.slice(2);
for (const world of worlds.length > 0 ? worlds : ['plugin', 'conformance']) {
  if (!/^[a-z][a-z0-9-]*$/.test(world)) die(`not a world name: ${world}`);
  await build(world);
}
