// {{NAME}}: a container connects to the cloud metadata service.

import * as sdk from './rulehost-rule.js';

function onEvent(index, event, findings) {
  if (event.body.tag !== 'socket-connect') return;
  const ipPort = sdk.socketIpPort(event.body.val.address);
  if (ipPort === null || ipPort[0] !== '169.254.169.254') return;
  findings.push(sdk.finding(index, [
    ['ip', sdk.ip(ipPort[0])],
    ['port', sdk.unsigned(ipPort[1])],
    ['comm', sdk.comm(index)],
  ]));
}

export const detector = sdk.rule({
  meta: sdk.metadata({
    id: '{{ID}}',
    version: '0.1.0',
    name: 'Cloud metadata service contacted',
    eventName: '{{EVENT}}',
    severity: 2,
    selects: ['socket-connect'],
  }),
  onEvent,
});
