// The rulehost rule SDK for JavaScript: IP helpers between the world's types and
// strings, a metadata builder with the Rust SDK's defaults, a finding helper, and the
// `detector` export built from one `onEvent(index, event, findings)` function.
//
// The world's types as componentize-js gives them: records are objects with camelCase
// fields, variants `{ tag, val }`, enums strings, u64 values (timestamps, container
// handles) BigInt, tuples arrays.

import { log as hostLog } from 'rulehost:rule/log@0.1.3';

/** An IPv4 or IPv6 address in its canonical text form (IPv4-mapped IPv6 as IPv4). */
export function ipText(ip) {
  if (ip.tag === 'ipv4') return ip.val.join('.');
  const words = ip.val;
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return [words[6] >> 8, words[6] & 255, words[7] >> 8, words[7] & 255].join('.');
  }
  return ipv6Text(words);
}

// RFC 5952: lowercase, the longest run of two or more zero words as `::`.
function ipv6Text(words) {
  let best = [-1, 0];
  for (let at = 0; at < 8; ) {
    if (words[at] !== 0) { at++; continue; }
    let end = at;
    while (end < 8 && words[end] === 0) end++;
    if (end - at > best[1] && end - at > 1) best = [at, end - at];
    at = end;
  }
  const hex = (list) => list.map((w) => w.toString(16)).join(':');
  if (best[0] < 0) return hex(words);
  return hex(words.slice(0, best[0])) + '::' + hex(words.slice(best[0] + best[1]));
}

/** Parses an address as an env value spells it (brackets allowed); canonical text or null. */
export function parseIp(text) {
  const ip = parseWorldIp(text);
  return ip === null ? null : ipText(ip);
}

/** Parses an address into the world's `ip-address`; null if it is not one. */
export function parseWorldIp(text) {
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1);
  const v4 = parseIpv4(text);
  if (v4 !== null) return { tag: 'ipv4', val: v4 };
  const v6 = parseIpv6(text);
  return v6 === null ? null : { tag: 'ipv6', val: v6 };
}

function parseIpv4(text) {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const octets = [];
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return null;
    octets.push(Number(part));
  }
  return octets;
}

function parseIpv6(text) {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.split('::').length > 2) return null;
  let [head, tail] = text.includes('::') ? text.split('::') : [text, null];
  const words = (part) => {
    if (part === '') return [];
    const out = [];
    const pieces = part.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes('.')) {
        const v4 = parseIpv4(piece);
        if (v4 === null) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const first = words(head);
  const last = tail === null ? [] : words(tail);
  if (first === null || last === null) return null;
  if (tail === null) return first.length === 8 ? first : null;
  const missing = 8 - first.length - last.length;
  if (missing < 1) return null;
  return [...first, ...new Array(missing).fill(0), ...last];
}

/** The IP (canonical text) and port a socket address names; null for AF_UNIX and others. */
export function socketIpPort(address) {
  if (address.tag === 'ipv4' || address.tag === 'ipv6') {
    return [ipText({ tag: address.tag, val: address.val.address }), address.val.port];
  }
  return null;
}

// A finding's values, by kind: what the world's `value` variant carries.
export const text = (val) => ({ tag: 'text', val });
export const unsigned = (val) => ({ tag: 'unsigned', val: BigInt(val) });
export const signed = (val) => ({ tag: 'signed', val: BigInt(val) });
export const boolean = (val) => ({ tag: 'boolean', val });
/** An IP value from its text form. */
export const ip = (val) => ({ tag: 'ip', val: parseWorldIp(val) });
/** Filled in by the host: no string crosses for it. */
export const containerId = (handle) => ({ tag: 'container-id', val: handle });
/** The command name of the finding's event, filled in by the host. */
export const comm = (index) => ({ tag: 'comm', val: index });

/** A finding about the `index`-th event of the batch, from [name, value] pairs. */
export function finding(index, fields) {
  return { event: index, data: fields.map(([name, value]) => ({ name, value })) };
}

/** A line in the agent's log, tagged with the rule's name (rate-limited by the host). */
export function log(level, message) {
  hostLog(level, message);
}

/** A rule's metadata with the Rust SDK's defaults. */
export function metadata(fields) {
  return {
    description: '',
    tags: [],
    severity: 0,
    mitre: undefined,
    selects: ['process-exec', 'socket-connect'],
    origin: 'container',
    envVars: [],
    ...fields,
  };
}

/** The `detector` export for a rule made of `onEvent(index, event, findings)`. */
export function rule({ meta, onEvent, init = () => {}, beforeBatch = () => {} }) {
  const onEvents = (events) => {
    beforeBatch();
    const findings = [];
    events.forEach((event, index) => onEvent(index, event, findings));
    return findings;
  };
  return {
    metadata: () => meta,
    init: (config) => init(config),
    onEvent: (event) => onEvents([event]),
    onEvents,
  };
}
