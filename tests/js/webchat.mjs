// The web chat in a real browser: Playwright (playwright-core) drives Debian's chromium through Roost's
// /chat page (Converse.js). The pytest side (tests/integration/test_webchat.py) runs the server and a
// slixmpp peer that answers; this script only uses the page, as a person would.
//
//   node webchat.mjs CHAT_URL USER PASSWORD PEER_JID ROOM_JID IMAGE_PATH
//
// One JSON line per step on stdout; exit status 0 when every step was seen on the page.
import { chromium } from 'playwright-core';

const [chatUrl, user, password, peer, room, image] = process.argv.slice(2);
const executablePath = process.env.ROOST_CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 20000;

// Every origin the page talked to (the server only: nothing is fetched from elsewhere).
const origins = new Set();
const step = (event, extra = {}) => console.log(JSON.stringify({ event, ...extra }));

async function login(browser) {
    // A new context has empty storage: Converse knows nothing it did not get from the server.
    const context = await browser.newContext();
    page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
    page.on('requestfailed', (req) => console.error(`request failed: ${req.url()}`));
    page.on('request', (req) => origins.add(new URL(req.url()).origin));
    page.on('console', (msg) => { if (msg.type() === 'error') console.error(`console: ${msg.text()}`); });
    await page.goto(chatUrl);
    await page.fill('#converse-login-jid', user);
    await page.fill('#converse-login-password', password);
    await page.click('converse-login-form button[type=submit]');
    await page.waitForSelector('converse-roster');
    return { context, page };
}

async function openChat(page, jid) {
    await page.evaluate((j) => { location.hash = `converse/chat?jid=${j}`; }, jid);
    await page.waitForSelector(`converse-chat[jid="${jid}"] textarea.chat-textarea`);
}

async function send(page, selector, text) {
    await page.fill(`${selector} textarea.chat-textarea`, text);
    await page.press(`${selector} textarea.chat-textarea`, 'Enter');
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-gpu'] });
let page;
try {
    let context;
    ({ context, page } = await login(browser));
    step('logged-in');

    const chat = `converse-chat[jid="${peer}"]`;
    await openChat(page, peer);
    await send(page, chat, 'hello from the browser');
    // The peer answers every message; its answer shows in the open chat.
    await page.waitForSelector(`${chat} .chat-msg__text:has-text("hello from slixmpp")`);
    step('chatted');

    // XEP-0363 through Converse's upload button: the file input behind the paperclip.
    await page.setInputFiles(`${chat} input.fileupload`, image);
    const img = await page.waitForSelector(`${chat} .chat-msg img[src*="/upload/"]`);
    const loaded = await img.evaluate(
        (el) => el.complete ? el.naturalWidth : new Promise((ok) => { el.onload = () => ok(el.naturalWidth); el.onerror = () => ok(0); }),
    );
    if (!loaded) throw new Error('the uploaded image did not load');
    step('uploaded', { src: await img.getAttribute('src'), width: loaded });

    await page.evaluate((j) => { location.hash = `converse/room?jid=${j}`; }, room);
    const muc = `converse-muc[jid="${room}"]`;
    await page.waitForSelector(`${muc} textarea.chat-textarea`);
    await send(page, muc, 'hello room');
    await page.waitForSelector(`${muc} .chat-msg__text:has-text("hello room")`);
    step('joined', { room });

    // A fresh login (new browser storage): the conversation comes back from the archive (XEP-0313).
    await context.close();
    ({ context, page } = await login(browser));
    await openChat(page, peer);
    await page.waitForSelector(`${chat} .chat-msg__text:has-text("hello from slixmpp")`);
    await page.waitForSelector(`${chat} .chat-msg__text:has-text("hello from the browser")`);
    step('archive', { origins: [...origins].sort() });
    await context.close();
} catch (err) {
    // What the page showed when a step failed: that is what a person would have seen.
    if (page) console.error(`page text: ${(await page.innerText('body').catch(() => '')).slice(0, 1500)}`);
    throw err;
} finally {
    await browser.close();
}
