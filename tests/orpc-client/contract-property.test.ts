// The contract's zod schemas and the server agree (issue 21): for inputs generated from the
// contract's JSON Schemas (`clients/contract/contract.json`, what the zod schemas are made of),
// valid ones and mutated ones (a value out of range, too long, of the wrong type, a missing or
// unknown field, a malformed format), every input the procedure's zod schema accepts is
// accepted by the server (not `400 BAD_REQUEST`), and every input it rejects is answered
// `400 BAD_REQUEST`. Run by services/api/tests/contract_property.rs with API_URL set.
//
// Exits 0 when every property holds; otherwise prints the counterexample and exits 1.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

import { createORPCClient, ORPCError } from '@orpc/client'
import { RPCLink } from '@orpc/client/fetch'
import type { ContractRouterClient } from '@orpc/contract'
import fc from 'fast-check'
import type { z } from 'zod'

import * as schemas from '../../clients/contract/src/schemas.js'
import { contract } from '../../clients/contract/src/index.js'
import { rustTrim } from '../../clients/contract/src/rules.js'
import { Checks, describeError, required } from './harness.js'

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type JsonSchema = { [key: string]: unknown }

const apiUrl = required('API_URL')
const runs = Number(process.env.CONTRACT_PROPERTY_RUNS ?? '60')
const document = JSON.parse(
  readFileSync(new URL('../../clients/contract/contract.json', import.meta.url), 'utf8'),
) as { procedures: Record<string, { input: JsonSchema | null }> }

// ---------------------------------------------------------------------------------------------
// Arbitraries from JSON Schema (the inputs are inlined, no `$ref`), with our `x-text`.

/** A string without NUL (the server refuses NUL everywhere) of `min..=max` code points. */
function plainText(min: number, max: number): fc.Arbitrary<string> {
  const unit = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('a', 'Z', '7', '-', '_', '.', '/') },
    { weight: 2, arbitrary: fc.constantFrom(' ', '\t', '\n', '\u00a0', '\u2003', '\u3000', '\ufeff') },
    { weight: 2, arbitrary: fc.constantFrom('é', 'ß', '日', '😀', '\u0301') },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => c !== '\u0000') },
  )
  return fc.array(unit, { minLength: min, maxLength: Math.min(max, 60) }).map((units) => units.join(''))
}

function textArbitrary(schema: JsonSchema): fc.Arbitrary<string> {
  const checked = (schema['x-text'] ?? {}) as {
    trim?: boolean
    minLength?: number
    maxLength?: number
    format?: string
    lowercaseOneOf?: string[]
  }
  const format = (schema.format as string | undefined) ?? checked.format
  switch (format) {
    case 'uuid':
      return fc.uuid()
    case 'date':
      return fc
        .date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T00:00:00Z'), noInvalidDate: true })
        .map((date) => date.toISOString().slice(0, 10))
    case 'email':
      return fc.emailAddress()
    case 'http-url':
      return fc.webUrl({ validSchemes: ['http', 'https'] })
    default:
      break
  }
  if (schema.pattern === '^([01][0-9]|2[0-3]):[0-5][0-9]$') {
    return fc
      .tuple(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 }))
      .map(([h, m]) => `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}`)
  }
  if (checked.lowercaseOneOf) {
    return fc.constantFrom(...checked.lowercaseOneOf)
  }
  const min = Math.max((schema.minLength as number | undefined) ?? 0, checked.minLength ?? 0)
  const max = Math.min((schema.maxLength as number | undefined) ?? 80, checked.maxLength ?? 80)
  const text = plainText(min, max)
  return checked.trim && (checked.minLength ?? 0) > 0
    ? text.filter((value) => rustTrim(value).length >= (checked.minLength ?? 0))
    : text
}

function valid(schema: JsonSchema | boolean): fc.Arbitrary<Json> {
  if (typeof schema === 'boolean') {
    return fc.constant(null)
  }
  const types = Array.isArray(schema.type) ? (schema.type as string[]) : schema.type ? [schema.type as string] : []
  const anyOf = (schema.anyOf ?? schema.oneOf) as JsonSchema[] | undefined
  if (anyOf) {
    return fc.oneof(...anyOf.map((branch) => valid(branch)))
  }
  if (schema.const !== undefined) {
    return fc.constant(schema.const as Json)
  }
  if (Array.isArray(schema.enum)) {
    return fc.constantFrom(...(schema.enum as Json[]))
  }
  const options: fc.Arbitrary<Json>[] = []
  for (const type of types) {
    switch (type) {
      case 'null':
        options.push(fc.constant(null))
        break
      case 'boolean':
        options.push(fc.boolean())
        break
      case 'integer': {
        const min = (schema.minimum as number | undefined) ?? -1_000_000
        const max = (schema.maximum as number | undefined) ?? 1_000_000
        options.push(fc.integer({ min: Math.max(min, -1e15), max: Math.min(max, 1e15) }))
        break
      }
      case 'number':
        options.push(fc.double({ noNaN: true, noDefaultInfinity: true }))
        break
      case 'string':
        options.push(textArbitrary(schema))
        break
      case 'array': {
        const items = valid((schema.items ?? true) as JsonSchema)
        const array = fc.array(items, {
          minLength: (schema.minItems as number | undefined) ?? 0,
          maxLength: Math.min((schema.maxItems as number | undefined) ?? 8, 8),
        })
        options.push(schema.uniqueItems ? array.map((values) => [...new Set(values)]) : array)
        break
      }
      case 'object': {
        const properties = (schema.properties ?? {}) as Record<string, JsonSchema>
        const requiredKeys = (schema.required ?? []) as string[]
        const record: Record<string, fc.Arbitrary<Json>> = {}
        for (const [key, property] of Object.entries(properties)) {
          record[key] = valid(property)
        }
        options.push(
          fc.record(record, { requiredKeys: requiredKeys.filter((key) => key in record) }) as fc.Arbitrary<Json>,
        )
        break
      }
      default:
        throw new Error(`no arbitrary for ${JSON.stringify(schema)}`)
    }
  }
  if (options.length === 0) {
    return fc.constant(null)
  }
  return fc.oneof(...options)
}

/** One change that may make an input invalid (or not: the property holds either way). */
function mutated(input: fc.Arbitrary<Json>, schema: JsonSchema): fc.Arbitrary<Json> {
  const properties = Object.keys((schema.properties ?? {}) as Record<string, unknown>)
  const wrong = fc.oneof(
    fc.constant<Json>(null),
    fc.constant<Json>(''),
    fc.constant<Json>('x'.repeat(600)),
    fc.constant<Json>(' '),
    fc.constant<Json>('not-a-uuid'),
    fc.constant<Json>('2025-02-30'),
    fc.constant<Json>('Mars/Olympus_Mons'),
    fc.constant<Json>('24:00'),
    fc.constant<Json>('a\u0000b'),
    fc.integer({ min: -10, max: 10 }),
    fc.constant<Json>(1.5),
    fc.constant<Json>(1e20),
    fc.constant<Json>(true),
    fc.constant<Json>([]),
    fc.constant<Json>([1, 1]),
    fc.constant<Json>({}),
  )
  return fc.tuple(input, fc.constantFrom(...properties, '__unknownKey'), wrong, fc.boolean()).map(([value, key, replacement, remove]) => {
    const object = { ...(value as Record<string, Json>) }
    if (remove && key !== '__unknownKey') {
      delete object[key]
    } else {
      object[key] = replacement
    }
    return object
  })
}

// ---------------------------------------------------------------------------------------------
// The server.

async function signIn(): Promise<string> {
  const response = await fetch(`${apiUrl}/auth/dev/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `contract-${randomUUID()}@example.com`, name: 'Contract Property' }),
  })
  assert.equal(response.status, 200, `dev login: ${response.status}`)
  return ((await response.json()) as { token: string }).token
}

const token = await signIn()
const client: ContractRouterClient<typeof contract> = createORPCClient(
  new RPCLink({ url: `${apiUrl}/rpc`, headers: { authorization: `Bearer ${token}` } }),
)

/** The status the server answers `input` with (a plain RPC call, no client-side checks). */
async function statusOf(procedure: string, input: Json): Promise<{ status: number; body: string }> {
  const response = await fetch(`${apiUrl}/rpc/${procedure.replace('.', '/')}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ json: input }),
  })
  return { status: response.status, body: await response.text() }
}

// Rows the inputs refer to: their ids replace the generated ones (a random id is a 404, which
// says nothing about validation).
const entry = await client.journalEntries.create({ title: 'Property', content: 'x' })
const prompt = await client.prompts.create({ text: 'Property prompt?' })
const team = await client.teams.create({ name: 'Property team' })
const fixed: Record<string, Record<string, Json>> = {
  'journalEntries.update': { journalEntryId: entry.journalEntryId },
  'prompts.update': { promptId: prompt.promptId },
  'teams.rename': { teamId: team.teamId },
}
/** Fields left out of the generated inputs: other rows' ids, versions (a 404 or a 409). */
const omitted: Record<string, string[]> = {
  'journalEntries.create': ['teamId', 'promptId'],
  'journalEntries.update': ['expectedVersion'],
  'prompts.create': ['teamId'],
  'prompts.update': ['expectedVersion'],
}

const PROCEDURES = [
  'journalEntries.create',
  'journalEntries.update',
  'prompts.create',
  'prompts.update',
  'teams.create',
  'teams.rename',
  'users.update',
] as const

function zodSchemaOf(procedure: string): z.ZodType {
  const name = `${procedure
    .split('.')
    .map((part) => part[0]!.toUpperCase() + part.slice(1))
    .join('')}Input`
  const schema = (schemas as Record<string, unknown>)[name]
  assert.ok(schema, `schemas.ts has no ${name}`)
  return schema as z.ZodType
}

const checks = new Checks({ describe: describeError })
let accepted = 0
let refused = 0

for (const procedure of PROCEDURES) {
  await checks.check(`${procedure}: the zod schema accepts exactly what the server accepts`, async () => {
    const schema = document.procedures[procedure]?.input
    assert.ok(schema, `contract.json has no input for ${procedure}`)
    const pruned: JsonSchema = {
      ...schema,
      properties: Object.fromEntries(
        Object.entries(schema.properties as Record<string, JsonSchema>).filter(
          ([key]) => !(omitted[procedure] ?? []).includes(key) && !(key in (fixed[procedure] ?? {})),
        ),
      ),
    }
    const base = valid(pruned)
    const inputs = fc.oneof(base, mutated(base, pruned)).map((input) => ({ ...(input as object), ...(fixed[procedure] ?? {}) }) as Json)
    const zod = zodSchemaOf(procedure)
    let valids = 0
    let invalids = 0
    await fc.assert(
      fc.asyncProperty(inputs, async (input) => {
        const parsed = zod.safeParse(input)
        const { status, body } = await statusOf(procedure, input)
        if (parsed.success) {
          valids += 1
          assert.notEqual(status, 400, `zod accepts ${JSON.stringify(input)} but the server answered 400: ${body}`)
          assert.ok(status < 500, `the server answered ${status}: ${body}`)
        } else {
          invalids += 1
          assert.equal(
            status,
            400,
            `zod rejects ${JSON.stringify(input)} (${parsed.error.issues.map((issue) => issue.message).join('; ')}) but the server answered ${status}: ${body}`,
          )
          assert.match(body, /"code":"BAD_REQUEST"/)
        }
      }),
      process.env.CONTRACT_PROPERTY_SEED
        ? { numRuns: runs, seed: Number(process.env.CONTRACT_PROPERTY_SEED) }
        : { numRuns: runs },
    )
    console.log(`        ${procedure}: ${valids} valid, ${invalids} invalid inputs`)
    assert.ok(valids >= runs / 5 && invalids >= runs / 10, `too few of one kind: ${valids} valid, ${invalids} invalid`)
    accepted += valids
    refused += invalids
  })
}

await checks.check('an ORPCError from a call the schema rejects is BAD_REQUEST', async () => {
  try {
    // @ts-expect-error the contract's types refuse this too
    await client.teams.create({ name: 42 })
    assert.fail('expected an error')
  } catch (error) {
    assert.ok(error instanceof ORPCError && error.code === 'BAD_REQUEST', describeError(error))
  }
})

checks.finish(`\ncontract-property: all checks passed (${accepted} accepted, ${refused} refused inputs)`)
