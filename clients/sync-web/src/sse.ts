// A minimal Server-Sent Events reader over a fetch body (the stream is opened with `fetch`,
// not `EventSource`, so the token travels in `Authorization` and refusals can be read).

export interface SseEvent {
  readonly id: string | undefined
  readonly data: string
}

/** Yields each event with a `data:` field; comments and other fields are skipped. */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let data: string[] = []
  let id: string | undefined
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) {
        return
      }
      buffer += decoder.decode(value, { stream: true })
      let newline = buffer.search(/\r\n|\r|\n/)
      while (newline >= 0) {
        const line = buffer.slice(0, newline)
        const width = buffer.startsWith('\r\n', newline) ? 2 : 1
        buffer = buffer.slice(newline + width)
        if (line === '') {
          if (data.length > 0) {
            yield { id, data: data.join('\n') }
          }
          data = []
          id = undefined
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':')
          const field = colon < 0 ? line : line.slice(0, colon)
          let value = colon < 0 ? '' : line.slice(colon + 1)
          if (value.startsWith(' ')) {
            value = value.slice(1)
          }
          if (field === 'data') {
            data.push(value)
          } else if (field === 'id') {
            id = value
          }
        }
        newline = buffer.search(/\r\n|\r|\n/)
      }
    }
  } finally {
    reader.releaseLock()
  }
}
