// Hostile fixture in JavaScript: what a rule written in a language with a runtime might
// try. An exec's `HOSTILE=<mode>` env entry picks it:
// - loop: never returns (the CPU deadline must cut it off);
// - bomb: allocates without bound (the memory cap must stop it);
// - log: 10,000 log lines and 10,000 console lines (the log rate limit must hold);
// - escape: reads the environment (JavaScript's WASI has no files); reports what it got;
// - fetch: calls fetch, which this build leaves out (no network): the call traps;
// anything else: one finding, so a test sees the rule alive.

import * as sdk from '../../sdk-js/rulehost-rule.js';

function mode(event) {
  if (event.body.tag !== 'process-exec') return null;
  const entry = event.body.val.env.find((e) => e.startsWith('HOSTILE='));
  return entry === undefined ? null : entry.slice('HOSTILE='.length);
}

function onEvent(index, event, findings) {
  const what = mode(event);
  if (what === null) return;
  if (what === 'loop') {
    for (;;) {}
  }
  if (what === 'bomb') {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
  }
  if (what === 'log') {
    for (let i = 0; i < 10000; i++) sdk.log('info', `flooding the log ${i}`);
    for (let i = 0; i < 10000; i++) console.log(`flooding stdout ${i}`);
  }
  if (what === 'fetch') {
    fetch('http://169.254.169.254/latest/meta-data/');
  }
  let env = -1;
  if (what === 'escape') {
    env = typeof process === 'undefined' ? 0 : Object.keys(process.env ?? {}).length;
  }
  findings.push(sdk.finding(index, [
    ['mode', sdk.text(what)],
    ['env', sdk.signed(env)],
  ]));
}

export const detector = sdk.rule({
  meta: sdk.metadata({
    id: 'FIXTURE-HOSTILE-JS',
    version: '0.1.0',
    name: 'Hostile JavaScript rule',
    eventName: 'hostile_js',
    tags: ['fixture'],
    origin: 'any',
    selects: ['process-exec'],
    envVars: ['HOSTILE'],
  }),
  onEvent,
});
