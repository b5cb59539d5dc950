// A real @xmpp/client (xmpp.js) over WebSocket, driven by tests/integration/test_websocket_clients.py.
//
//   node chat.mjs <service> <domain> <username> <password> <resource> <peer> <text>
//
// Logs in, sends <text> to <peer>, answers the first message it gets with "echo: <body>", then leaves.
// Every step is one JSON line on stdout for the test to check.
import { client, xml } from "@xmpp/client";

if (typeof globalThis.WebSocket === "undefined") {
  // Node before 22 has no WebSocket of its own; xmpp.js uses the global one.
  globalThis.WebSocket = (await import("ws")).default;
}

const [service, domain, username, password, resource, peer, text] = process.argv.slice(2);
const say = (event) => console.log(JSON.stringify(event));
const xmpp = client({ service, domain, username, password, resource });

const timer = setTimeout(() => {
  say({ event: "timeout" });
  process.exit(3);
}, 20000);

xmpp.on("error", (err) => {
  say({ event: "error", error: String(err) });
  process.exit(2);
});

xmpp.on("stanza", async (stanza) => {
  const body = stanza.is("message") ? stanza.getChildText("body") : null;
  if (!body) return;
  say({ event: "message", from: stanza.attrs.from, body });
  await xmpp.send(xml("message", { to: stanza.attrs.from, type: "chat" }, xml("body", {}, `echo: ${body}`)));
  await xmpp.stop();
  clearTimeout(timer);
  say({ event: "offline" });
});

xmpp.on("online", async (address) => {
  say({ event: "online", jid: address.toString() });
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, text)));
});

await xmpp.start();
