// Long-lived reference oracle for cmdseg_nb conformance tests.
// Reads JSON lines on stdin, writes one JSON line per request on stdout:
//   {"mapping": M, "payload": P}  -> {"ok": true, "undefined": bool, "value": JSON.stringify(result)} | {"ok": false, "error": msg}
//   {"fql": F, "event": E}        -> {"ast": parseFql(F), "match": validate(ast, E)} | {"ast": ..., "error": msg}
//   {"fql": F}                    -> {"ast": parseFql(F)}
// NODE_PATH must point at a node_modules holding @segment/actions-core@3.170.0 and liquidjs@10.27.2.
'use strict'
const readline = require('readline')
const { transform } = require('@segment/actions-core/mapping-kit')
const subs = require('@segment/destination-subscriptions')
const parseFql = subs.parseFql || require('@segment/destination-subscriptions/dist/cjs/parse-fql').default
const validate = subs.validate || require('@segment/destination-subscriptions/dist/cjs/validate').default

function astOut(ast) {
  if (ast && ast.error) return { error: String(ast.error.message || ast.error) }
  return JSON.parse(JSON.stringify(ast, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? { __num: String(v) } : v === undefined ? null : v)))
}

const rl = readline.createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  let out
  try {
    const req = JSON.parse(line)
    if ('mapping' in req) {
      try {
        const r = transform(req.mapping, req.payload)
        out = r === undefined ? { ok: true, undefined: true } : { ok: true, undefined: false, value: JSON.stringify(r) }
      } catch (e) {
        out = { ok: false, error: String(e && e.message) }
      }
    } else {
      const ast = parseFql(req.fql)
      out = { ast: astOut(ast) }
      if ('event' in req) {
        try {
          out.match = validate(ast, req.event)
        } catch (e) {
          out.error = String(e && e.message)
        }
      }
    }
  } catch (e) {
    out = { fatal: String(e && e.message) }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
})
