// A real Strophe.js client over BOSH, driven by tests/integration/test_bosh.py.
//
//   node bosh-chat.mjs <service> <jid> <password> <peer> <text>
//
// Logs in over BOSH, sends <text> to <peer>, answers the first message it gets with "echo: <body>",
// then disconnects. Every step is one JSON line on stdout for the test to check.
import { DOMParser } from "@xmldom/xmldom";
import XHR from "xhr2";

// Node has no XMLHttpRequest; Strophe's BOSH transport needs one that also parses the response
// (responseXML), as a browser's does.
class XMLHttpRequest extends XHR {
  get responseXML() {
    const text = this.responseText;
    return text ? new DOMParser().parseFromString(text, "text/xml") : null;
  }
}
globalThis.XMLHttpRequest ??= XMLHttpRequest;

const { Strophe, $msg, $pres } = await import("strophe.js");

const [service, jid, password, peer, text] = process.argv.slice(2);
const say = (event) => console.log(JSON.stringify(event));
const timer = setTimeout(() => {
  say({ event: "timeout" });
  process.exit(3);
}, 20000);

const conn = new Strophe.Connection(service);
if (process.env.STROPHE_DEBUG) {
  conn.rawInput = (data) => console.error("IN ", data);
  conn.rawOutput = (data) => console.error("OUT", data);
}
conn.addHandler(
  (stanza) => {
    const body = stanza.getElementsByTagName("body")[0];
    if (!body) return true;
    const from = stanza.getAttribute("from");
    say({ event: "message", from, body: Strophe.getText(body) });
    conn.send($msg({ to: from, type: "chat" }).c("body").t(`echo: ${Strophe.getText(body)}`));
    conn.flush();
    conn.disconnect("done");
    return false;
  },
  null,
  "message",
);
conn.connect(jid, password, (status, condition) => {
  if (status === Strophe.Status.CONNECTED) {
    say({ event: "online", jid: conn.jid });
    conn.send($pres());
    conn.send($msg({ to: peer, type: "chat" }).c("body").t(text));
  } else if (status === Strophe.Status.DISCONNECTED) {
    clearTimeout(timer);
    say({ event: "offline" });
    process.exit(0);
  } else if (status === Strophe.Status.AUTHFAIL || status === Strophe.Status.CONNFAIL) {
    say({ event: "error", status, condition });
    process.exit(2);
  }
});
