// The WalletConnect v1 flow, dapp and wallet, with the HTTP-bridge era SDK from npm, unchanged:
// walletconnect@0.7.28 (the dapp) and js-walletconnect-core@0.7.28 (its Connector, which a wallet
// uses to encrypt, decrypt and call the bridge).
//
//   node wc_v1_flow.mjs <bridge url> <push type> <push token>
//
// Prints one JSON line {sessionId, callId, accounts, result, resumed} and exits 0 when every step
// went as the SDK expects; otherwise prints the failure on stderr and exits 1. Run by
// tests/integration/test_sdk_clients.py against a real stack.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

// Milliseconds between two polls of a listener, and how long one may wait (the SDK's defaults: 1 s, 60 s).
const POLL_INTERVAL_MS = 200
const LISTEN_TIMEOUT_MS = 30000
const ACCOUNT = '0x5fd8d8c4a1cd7c8e0f9e2a6f5a0c3b0d9e7a1b22'
const TX = { from: ACCOUNT, to: '0x0000000000000000000000000000000000000001', value: '0x1', data: '0x' }
const TX_HASH = '0x' + 'ab'.repeat(32)

// A window.localStorage kept in memory, as the SDK's own tests give it one (mock-local-storage).
class MemoryStorage {
  constructor () { this.items = new Map() }
  getItem (key) { return this.items.has(key) ? this.items.get(key) : null }
  setItem (key, value) { this.items.set(key, String(value)) }
  removeItem (key) { this.items.delete(key) }
  clear () { this.items.clear() }
}

// The SDK reads window.localStorage once, when it loads: the window comes first. fetch and crypto are Node's.
globalThis.window = { localStorage: new MemoryStorage() }
const WalletConnect = require('walletconnect').default
const { Connector } = require('js-walletconnect-core')

function sleep (ms) {
  return new Promise(resolve => setTimeout(resolve, ms))
}

async function waitForCalls (wallet) {
  const deadline = Date.now() + LISTEN_TIMEOUT_MS
  for (;;) {
    const calls = await wallet._getMultipleEncryptedData(`/session/${wallet.sessionId}/calls`)
    if (calls && Object.keys(calls).length) return calls
    assert.ok(Date.now() < deadline, 'the wallet saw no call request')
    await sleep(POLL_INTERVAL_MS)
  }
}

async function main ([bridgeUrl, pushType, pushToken]) {
  // The dapp opens a session; the wallet gets bridge, session and key from the URI (the QR code).
  const dapp = new WalletConnect({ bridgeUrl, dappName: 'Example Dapp' })
  const session = await dapp.initSession()
  assert.ok(session.sessionId && !dapp.isConnected, 'a new session, not yet approved')
  assert.ok(session.expires > Date.now(), `the session's expires (ms) is ahead: ${session.expires}`)
  const wallet = new Connector({ uri: dapp.uri })
  assert.equal(wallet.sessionId, session.sessionId)

  // The wallet approves, with its push target (an empty webhook, as wallets send it: none).
  const approval = dapp.listenSessionStatus(POLL_INTERVAL_MS, LISTEN_TIMEOUT_MS)
  const encryptionPayload = await wallet.encrypt({ approved: true, chainId: 1, accounts: [ACCOUNT] })
  await wallet._fetchBridge(`/session/${wallet.sessionId}`, { method: 'PUT' },
    { encryptionPayload, push: { type: pushType, token: pushToken, webhook: '' } })
  const approved = await approval
  assert.deepEqual(approved.accounts, [ACCOUNT])
  assert.ok(dapp.isConnected && dapp.expires > Date.now(), 'the dapp is connected until its session expires')

  // A reloaded dapp (same localStorage) resumes the approved session.
  const reloaded = new WalletConnect({ bridgeUrl })
  const resumed = await reloaded.initSession()
  assert.equal(resumed.sessionId, session.sessionId)
  assert.deepEqual(resumed.accounts, [ACCOUNT])
  assert.ok(reloaded.isConnected)

  // The dapp asks for a transaction; the wallet reads the call request, answers it, the dapp gets the result.
  const sent = dapp.sendTransaction(TX)
  const calls = await waitForCalls(wallet)
  const [callId] = Object.keys(calls)
  assert.equal(Object.keys(calls).length, 1)
  const request = calls[callId].data
  assert.equal(request.method, 'eth_sendTransaction')
  assert.deepEqual(request.params, [TX])
  const single = await wallet._getEncryptedData(`/session/${wallet.sessionId}/call/${callId}`)
  assert.deepEqual(single.data, request)
  const status = await wallet.encrypt({ approved: true, result: TX_HASH })
  await wallet._fetchBridge(`/call-status/${callId}/new`, { method: 'POST' }, { encryptionPayload: status })
  const result = await sent
  assert.equal(result, TX_HASH)

  return { sessionId: session.sessionId, callId, accounts: approved.accounts, result, resumed: reloaded.isConnected }
}

main(process.argv.slice(2)).then(
  summary => {
    process.stdout.write(JSON.stringify(summary) + '\n')
    process.exit(0)
  },
  error => {
    process.stderr.write(`${error.stack || error}\n`)
    process.exit(1)
  }
)
