// Drive the ollama JavaScript library against a corral server and print what it saw as JSON.
// Usage: node conformance.mjs HOST CHAT_MODEL EMBED_MODEL
import { Ollama } from 'ollama'

const [host, chatModel, embedModel] = process.argv.slice(2)
const client = new Ollama({ host })
const question = [{ role: 'user', content: 'What is the capital of France? Answer in one word.' }]
const greedy = { temperature: 0, num_predict: 16 }

const chatParts = []
for await (const part of await client.chat({
  model: chatModel, messages: question, stream: true, options: greedy,
})) {
  chatParts.push(part)
}
const chatWhole = await client.chat({ model: chatModel, messages: question, options: greedy })

const generateParts = []
for await (const part of await client.generate({
  model: chatModel, prompt: 'Name the capital of France.', stream: true, options: greedy,
})) {
  generateParts.push(part)
}
const generateWhole = await client.generate({
  model: chatModel, prompt: 'Name the capital of France.', options: greedy,
})

const embedded = await client.embed({ model: embedModel, input: ['the cat', 'a dog'] })
const listed = await client.list()
const version = await client.version()

let missing = null
try {
  await client.chat({ model: 'nosuch', messages: question })
} catch (error) {
  missing = { name: error.name, status: error.status_code, message: error.error }
}

console.log(JSON.stringify({
  chat: {
    parts: chatParts.length,
    roles: [...new Set(chatParts.map((p) => p.message.role))],
    text: chatParts.map((p) => p.message.content).join(''),
    done: chatParts.map((p) => p.done),
    last: chatParts[chatParts.length - 1],
    whole: chatWhole.message.content,
  },
  generate: {
    parts: generateParts.length,
    text: generateParts.map((p) => p.response).join(''),
    last: generateParts[generateParts.length - 1],
    whole: generateWhole.response,
  },
  embed: { model: embedded.model, lengths: embedded.embeddings.map((v) => v.length) },
  list: listed.models.map((m) => m.model),
  version: version.version,
  missing,
}))
