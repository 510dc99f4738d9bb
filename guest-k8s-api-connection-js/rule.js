// TRC-1013, `k8s_api_connection`, in JavaScript: a process inside a container connects
// to the Kubernetes API server. The same detection as the Rust rule
// (guest-k8s-api-connection):
// - at exec, a container's KUBERNETES_SERVICE_HOST tells where its API server is; every
//   address a container declared is kept (up to MAX_ADDRESSES), compared canonically;
// - a later connect from that container to one of them, or to any API server endpoint
//   the node knows (the world's `cluster` import), is a finding;
// - the addresses live in host state, in the Rust rule's encoding (16 bytes per
//   address, IPv4 mapped), so either rule can replace the other by hot reload;
// - it tells the host what it watches, so unrelated connects are dropped in the kernel.

import * as sdk from '../sdk-js/rulehost-rule.js';
import { get as stateGet, set as stateSet } from 'rulehost:rule/state@0.1.3';
import { onlyWatchedConnects, watchAddress, watchApiServers } from 'rulehost:rule/interest@0.1.3';
import { apiServers, apiServersGeneration } from 'rulehost:rule/cluster@0.1.3';

const ENV_NAME = 'KUBERNETES_SERVICE_HOST';
const STATE_KEY = 'k8s-api-addresses';
const MAX_ADDRESSES = 8;
const CACHE_CAPACITY = 4096;
const WATCHED_CAPACITY = 64;

// Read-through cache of host state per container handle (handles are never reused).
const cache = new Map();
// Addresses (canonical text) this instance asked the host to watch.
const watched = [];
// The node's known API server endpoints ("ip port"), with the host's generation.
let endpoints = null;

function decode(bytes) {
  const addresses = [];
  for (let at = 0; at + 16 <= bytes.length; at += 16) {
    const words = [];
    for (let i = 0; i < 8; i++) words.push((bytes[at + 2 * i] << 8) | bytes[at + 2 * i + 1]);
    insert(addresses, sdk.ipText({ tag: 'ipv6', val: words }));
  }
  return addresses;
}

function encode(addresses) {
  const bytes = new Uint8Array(16 * addresses.length);
  addresses.forEach((text, n) => {
    const ip = sdk.parseWorldIp(text);
    const words = ip.tag === 'ipv6'
      ? ip.val
      : [0, 0, 0, 0, 0, 0xffff, (ip.val[0] << 8) | ip.val[1], (ip.val[2] << 8) | ip.val[3]];
    words.forEach((w, i) => {
      bytes[16 * n + 2 * i] = w >> 8;
      bytes[16 * n + 2 * i + 1] = w & 255;
    });
  });
  return bytes;
}

function insert(addresses, ip) {
  if (addresses.includes(ip) || addresses.length >= MAX_ADDRESSES) return false;
  addresses.push(ip);
  return true;
}

function addressesOf(container) {
  let found = cache.get(container);
  if (found === undefined) {
    if (cache.size >= CACHE_CAPACITY) cache.clear();
    const stored = stateGet(container, STATE_KEY);
    found = stored === undefined ? [] : decode(stored);
    cache.set(container, found);
  }
  return found;
}

function declaredAddress(entry) {
  const prefix = ENV_NAME + '=';
  return entry.startsWith(prefix) ? sdk.parseIp(entry.slice(prefix.length).trim()) : null;
}

function remember(container, ip) {
  const addresses = addressesOf(container);
  if (!insert(addresses, ip)) return;
  try {
    stateSet(container, STATE_KEY, encode(addresses));
  } catch (error) {
    sdk.log('warn', `cannot store API server address ${ip}: ${error}`);
  }
}

function watch(ip) {
  if (watched.includes(ip)) return;
  if (watched.length < WATCHED_CAPACITY) watched.push(ip);
  watchAddress(sdk.parseWorldIp(ip));
}

function refreshEndpoints() {
  const generation = apiServersGeneration();
  if (endpoints === null || endpoints.generation !== generation) {
    const known = apiServers().map((e) => `${sdk.ipText(e.address)} ${e.port}`);
    endpoints = { generation, known };
  }
}

function onEvent(index, event, findings) {
  const container = event.container;
  if (container === undefined) return; // host processes are out of scope
  const body = event.body;
  if (body.tag === 'process-exec') {
    for (const entry of body.val.env) {
      const ip = declaredAddress(entry);
      if (ip !== null) {
        remember(container, ip);
        watch(ip);
      }
    }
    return;
  }
  const ipPort = sdk.socketIpPort(body.val.address);
  if (ipPort === null) return;
  const [ip, port] = ipPort;
  const known = endpoints !== null && endpoints.known.includes(`${ip} ${port}`);
  if (addressesOf(container).includes(ip) || known) {
    findings.push(sdk.finding(index, [
      ['ip', sdk.ip(ip)],
      ['port', sdk.unsigned(port)],
      ['container_id', sdk.containerId(container)],
      ['comm', sdk.comm(index)],
    ]));
  }
}

export const detector = sdk.rule({
  meta: sdk.metadata({
    id: 'TRC-1013',
    version: '0.3.0',
    name: 'Kubernetes API server connection detected',
    eventName: 'k8s_api_connection',
    description:
      'A process inside a container connected to the Kubernetes API server: the address ' +
      'its environment declares, or an API server endpoint the node knows. Adversaries ' +
      'use the API server to discover and control cluster resources.',
    tags: ['container'],
    severity: 1,
    mitre: { tactic: 'Discovery', technique: 'Cloud Service Discovery', techniqueId: 'T1526' },
    selects: ['process-exec', 'socket-connect'],
    envVars: [ENV_NAME],
  }),
  onEvent,
  init: () => {
    onlyWatchedConnects();
    watchApiServers();
  },
  beforeBatch: refreshEndpoints,
});
