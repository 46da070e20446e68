/// <reference lib="dom" />
// The open API's reference page in a real browser with no route to anywhere but the api
// (issue 21): Debian's headless Chromium, driven by playwright-core, opens `<api>/api/docs`
// while every request to another host is aborted and recorded, as on an air-gapped network.
// The page must render the document's operations from the api alone, under its
// Content-Security-Policy, with no request leaving for a CDN, a font host or telemetry.
// Run by `services/api/tests/docs_page.rs`, which starts the api and sets the variables below;
// `SCREENSHOT=<path>` also saves what an integrator sees (docs/images/api-docs.png).
//
// Exits 0 when every check passes; otherwise prints which check failed and why, and exits 1.

import assert from 'node:assert/strict'

import { chromium } from 'playwright-core'

import { required } from './harness.js'

const apiUrl = required('API_URL')
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium'
const screenshot = process.env.SCREENSHOT
const apiHost = new URL(apiUrl).host

interface OpenApiDocument {
  info: { title: string }
  paths: Record<string, Record<string, { operationId?: string }>>
}
const document = (await (await fetch(`${apiUrl}/api/v1/openapi.json`)).json()) as OpenApiDocument
const paths = Object.keys(document.paths)
assert.ok(paths.length > 0, 'the document lists no paths')

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] })
let failed = false
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } })
  const elsewhere: string[] = []
  await context.route('**/*', async (route) => {
    const url = new URL(route.request().url())
    if (url.host === apiHost || url.protocol === 'data:' || url.protocol === 'blob:') {
      await route.continue()
    } else {
      elsewhere.push(url.href)
      await route.abort('addressunreachable')
    }
  })
  const page = await context.newPage()
  const consoleErrors: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error') {
      consoleErrors.push(message.text())
    }
  })
  page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`))
  const failedResponses: string[] = []
  page.on('response', (response) => {
    if (response.status() >= 400) {
      failedResponses.push(`${response.status()} ${response.url()}`)
    }
  })

  const response = await page.goto(`${apiUrl}/api/docs`, { waitUntil: 'load' })
  assert.equal(response?.status(), 200, 'GET /api/docs')
  const policy = (await response.allHeaders())['content-security-policy'] ?? ''
  assert.match(policy, /script-src 'self'(;|$)/, `the page's policy: ${policy}`)

  // Every path of the document is rendered. Scalar renders sections as they scroll into
  // view, so scroll through the page, collecting what has appeared.
  const seen = new Set<string>()
  const deadline = Date.now() + 60_000
  while (seen.size < paths.length && Date.now() < deadline) {
    const text = await page.evaluate(() => window.document.body.innerText)
    for (const path of paths) {
      if (text.includes(path)) {
        seen.add(path)
      }
    }
    await page.mouse.wheel(0, 600)
    await page.waitForTimeout(200)
  }
  const missing = paths.filter((path) => !seen.has(path))
  assert.deepEqual(missing, [], `paths not rendered; the page reads:\n${(await page.evaluate(() => window.document.body.innerText)).slice(0, 2000)}`)
  await page.evaluate(() => window.scrollTo(0, 0))
  const title = await page.evaluate(() => window.document.body.innerText.includes('Journal open API'))
  assert.ok(title, 'the document title is not on the page')

  // Let late requests (fonts, telemetry) fire before counting them.
  await page.waitForTimeout(1_500)
  if (screenshot) {
    await page.screenshot({ path: screenshot })
  }
  assert.deepEqual(elsewhere, [], 'the page asked for something outside the api')
  // Any refusal by the policy (a font, a script, a connection) shows here as an error.
  assert.deepEqual(consoleErrors, [], 'errors on the console (Content-Security-Policy refusals included)')
  assert.deepEqual(failedResponses, [], 'requests to the api that failed')
  console.log(`ok      /api/docs lists all ${paths.length} paths with nothing loaded from elsewhere`)
} catch (error) {
  failed = true
  console.log('FAILED  /api/docs in a browser with no route outside the api')
  console.log(error instanceof Error ? (error.stack ?? error.message) : String(error))
} finally {
  await browser.close()
}
if (failed) {
  process.exit(1)
}
console.log('docs-page: all checks passed')
