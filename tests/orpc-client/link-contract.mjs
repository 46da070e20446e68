// `npm ci` runs this (postinstall): `clients/contract` (the generated oRPC contract, whose
// TypeScript these scripts import) resolves `zod` and `@orpc/contract` through
// `clients/contract/node_modules`, a link to this folder's `node_modules`, so there is one
// copy of each package (two copies of zod or oRPC would make their types disagree).
import { lstatSync, symlinkSync, unlinkSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const link = join(here, '../../clients/contract/node_modules')
const target = relative(dirname(link), join(here, 'node_modules'))
try {
  const stat = lstatSync(link)
  if (!stat.isSymbolicLink()) {
    console.log(`${link} is a folder of its own (an install for building the package): left as it is`)
    process.exit(0)
  }
  unlinkSync(link)
} catch (error) {
  if (error.code !== 'ENOENT') {
    throw error
  }
}
symlinkSync(target, link, 'dir')
console.log(`linked ${link} -> ${target}`)
