// A web app's starting point on this backend: sign in (the api's dev login), then follow the
// sync-streamer with @journal/sync-web and render the user's journal entries (personal and
// teams') live from its local store, persisted in IndexedDB across reloads.
//
// Build the library first (`npm install --prefix clients/sync-web && npm run build --prefix
// clients/sync-web`), then serve the repository root on the app's origin, e.g.
// `python3 -m http.server 3000`, and open http://localhost:3000/examples/sync-web-demo/.
// Query parameters `api`, `sync` and `email` prefill the form (`autostart=1` signs in at once).

import { IndexedDbStorage, SyncClient } from '../../clients/sync-web/dist/index.js'

const form = document.querySelector('#sign-in')
const statusLine = document.querySelector('#status')
const list = document.querySelector('#entries')
const params = new URLSearchParams(location.search)
for (const name of ['api', 'sync', 'email']) {
  if (params.has(name)) {
    form.elements[name].value = params.get(name)
  }
}

/** POST an oRPC procedure on the api with the session's bearer token. */
async function rpc(api, session, procedure, input) {
  const response = await fetch(`${api}/rpc/${procedure}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${session}` },
    body: JSON.stringify({ json: input }),
  })
  const body = await response.json()
  if (!response.ok) {
    throw new Error(`${procedure}: ${body.json?.code ?? response.status}`)
  }
  return body.json
}

function render(client) {
  const entries = client
    .rows('journal_entries')
    .sort((a, b) => Number(b.createdAt ?? 0) - Number(a.createdAt ?? 0))
  list.replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement('li')
      item.dataset.journalEntryId = String(entry.journalEntryId)
      const title = document.createElement('h3')
      title.textContent = String(entry.title ?? '(untitled)')
      const content = document.createElement('p')
      content.textContent = String(entry.content ?? '')
      item.append(title, content)
      if (entry.teamId) {
        const team = document.createElement('span')
        team.className = 'team'
        team.textContent = 'team entry'
        item.append(team)
      }
      return item
    }),
  )
}

let client
async function signIn(api, sync, email) {
  await client?.stop()
  const login = await fetch(`${api}/auth/dev/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, name: email.split('@')[0] }),
  })
  if (!login.ok) {
    statusLine.textContent = `sign-in failed: ${login.status}`
    return
  }
  const { token: session, userId } = await login.json()
  client = new SyncClient({
    url: sync,
    getToken: () => rpc(api, session, 'sync/token', {}),
    // One database per user: another user on this browser never sees these rows.
    storage: new IndexedDbStorage(`journal-sync-${userId}`),
  })
  client.subscribe((event) => {
    if (event.type === 'status') {
      statusLine.dataset.status = event.status
      statusLine.textContent = event.status.replace('_', ' ')
    } else if (event.type === 'changes' || event.type === 'reset' || event.type === 'scope_removed') {
      render(client)
    }
  })
  await client.load()
  render(client)
  await client.start()
}

form.addEventListener('submit', (event) => {
  event.preventDefault()
  void signIn(form.elements.api.value, form.elements.sync.value, form.elements.email.value)
})
if (params.get('autostart') === '1') {
  void signIn(form.elements.api.value, form.elements.sync.value, form.elements.email.value)
}
