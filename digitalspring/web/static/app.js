// Digital Spring's web client. Plain JavaScript, no build step.
//
// Whatever a peer sent (text, file names, group names) is put in the page
// with textContent or as an attribute value, never parsed as HTML (no
// HTML-parsing sink appears here; tests.test_web checks), and the
// Content Security Policy runs no script but this one.
"use strict";

const state = {
  csrf: null,
  page: null,
  group: null, // the group shown, as group-show answers it
  names: {}, // peer ID -> the user's name for it
  deliveries: {}, // "group/epoch/index" -> the <ul> showing its delivery
  arriving: {}, // "group/epoch/index" -> the <li> of a message arriving here
  events: null,
  statusTimer: null,
};

// How often the status page asks the node again while it is shown.
const STATUS_EVERY = 3000;

function $(id) {
  return document.getElementById(id);
}

// An element with attributes (set as properties or attributes, never as
// HTML) and children (strings become text nodes).
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function say(text) {
  $("notice").textContent = text;
  $("error").textContent = "";
}

function fail(error) {
  $("error").textContent = String(error.message || error);
}

class NotLoggedIn extends Error {}

// Call the node's API: GET without a body, POST (with the CSRF token) with one.
async function api(name, body) {
  const options = { method: "GET", headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["content-type"] = "application/json";
    options.headers["x-csrf-token"] = state.csrf;
    options.body = JSON.stringify(body);
  }
  const response = await fetch("/api/" + name, options);
  if (response.status === 401) throw new NotLoggedIn("not logged in");
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || "HTTP " + response.status);
  return answer;
}

function nameOf(peer) {
  return state.names[peer] || peer.slice(0, 12) + "…";
}

function shortTime(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}

function size(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
  return (bytes / 1024 / 1024).toFixed(1) + " MiB";
}

async function loadNames() {
  const answer = await api("contacts");
  state.names = {};
  const list = $("contact-names");
  clear(list);
  for (const contact of answer.contacts) {
    if (contact.name) {
      state.names[contact.peer] = contact.name;
      list.append(el("option", { value: contact.name }));
    }
  }
  return answer.contacts;
}

// --- pages ----------------------------------------------------------------

const pages = {
  async identity() {
    const answer = await api("identity");
    $("peer-id").textContent = answer.peer_id;
    const list = $("shareable");
    clear(list);
    for (const line of answer.shareable) {
      list.append(el("li", {}, el("code", { class: "id" }, line)));
    }
    if (answer.shareable.length) {
      $("qr").src = "/api/qr.svg?index=0";
      $("qr-figure").hidden = false;
    }
  },

  async contacts() {
    const contacts = await loadNames();
    const list = $("contacts-list");
    clear(list);
    if (!contacts.length) list.append(el("li", { class: "muted" }, "No contacts yet."));
    for (const contact of contacts) {
      const rename = el("input", {
        "aria-label": "New name for " + (contact.name || contact.peer),
        value: contact.name || "",
        autocomplete: "off",
        placeholder: "New name",
      });
      list.append(
        el(
          "li",
          { "data-peer": contact.peer },
          el("strong", {}, contact.name || "(no name)"),
          el("div", { class: "id muted" }, contact.peer),
          ...contact.addresses.map((a) => el("div", { class: "muted" }, a)),
          el(
            "form",
            {
              class: "actions",
              onsubmit: (event) => {
                event.preventDefault();
                act(async () => {
                  await api("contacts-name", { peer: contact.peer, name: rename.value });
                  say("Renamed.");
                  await pages.contacts();
                });
              },
            },
            rename,
            el("button", { type: "submit", class: "secondary", "aria-label": "Rename " + (contact.name || contact.peer) }, "Rename"),
            el(
              "button",
              {
                type: "button",
                class: "secondary",
                "aria-label": "Remove " + (contact.name || contact.peer),
                onclick: () =>
                  act(async () => {
                    await api("contacts-remove", { peer: contact.peer });
                    say("Removed " + (contact.name || contact.peer) + ".");
                    await pages.contacts();
                  }),
              },
              "Remove",
            ),
          ),
        ),
      );
    }
  },

  async groups() {
    await loadNames();
    const [groups, invitations] = await Promise.all([api("group-list"), api("invitations")]);
    const list = $("groups-list");
    clear(list);
    if (!groups.groups.length) list.append(el("li", { class: "muted" }, "No groups yet."));
    for (const group of groups.groups) {
      const title = group.petname || group.name;
      list.append(
        el(
          "li",
          { "data-group": group.group },
          el("a", { href: "#group/" + group.group }, title),
          el(
            "div",
            { class: "muted" },
            group.role === "owner"
              ? "You own it · " + group.state
              : "You are its " + group.role + " · " + group.state + " · owner " + nameOf(group.owner),
          ),
        ),
      );
    }
    const waiting = $("invitations");
    clear(waiting);
    if (!invitations.invitations.length) waiting.append(el("li", { class: "muted" }, "None waiting."));
    for (const invitation of invitations.invitations) {
      const answer = (route) =>
        act(async () => {
          await api(route, { group: invitation.group, peer: invitation.from });
          await pages.groups();
        });
      waiting.append(
        el(
          "li",
          {},
          el("strong", {}, invitation.name),
          el("div", { class: "muted" }, "from " + (invitation.from_name || invitation.from)),
          el(
            "div",
            { class: "actions" },
            el("button", { type: "button", onclick: () => answer("accept"), "aria-label": "Accept " + invitation.name }, "Accept"),
            el("button", { type: "button", class: "secondary", onclick: () => answer("decline"), "aria-label": "Decline " + invitation.name }, "Decline"),
          ),
        ),
      );
    }
  },

  async group(groupId) {
    await loadNames();
    const shown = await api("group-show", { group: groupId });
    state.group = shown;
    $("group-title").textContent = shown.petname || shown.name;
    const owner = shown.role === "owner";
    $("group-info").textContent =
      (owner ? "You own it" : "You are its " + shown.role + "; its owner is " + nameOf(shown.owner)) +
      "; epoch " + shown.epoch + ".";
    $("send-box").hidden = !owner;
    $("member-note").hidden = owner;
    $("members-box").hidden = !owner;
    const members = $("members");
    clear(members);
    for (const member of shown.members || []) {
      members.append(
        el(
          "li",
          { "data-peer": member.peer, class: "member status-" + member.status },
          el("strong", {}, nameOf(member.peer)),
          el("span", { class: "badge" }, member.role),
          el("span", { class: "muted" }, member.status +
            (member.undelivered ? " · " + plural(member.undelivered, "message") + " to deliver" : "")),
        ),
      );
    }
    if (owner && !(shown.members || []).length) {
      members.append(el("li", { class: "muted" }, "No members yet: add a contact below."));
    }
    $("members-count").textContent = owner ? " (" + (shown.members || []).length + ")" : "";
    const history = await api("inbox", { to: groupId, limit: 200 });
    const list = $("messages");
    clear(list);
    state.deliveries = {};
    state.arriving = {};
    for (const message of history.messages) list.append(messageItem(message));
    if (!history.messages.length) list.append(el("li", { class: "muted", id: "no-messages" }, "No messages yet."));
  },

  async status() {
    const status = await api("status");
    const network = status.network || {};
    const count = status.connections.length;
    $("status-connections").textContent =
      count === 0
        ? "No peer is connected now."
        : plural(count, "peer") + " connected now (" + (network.inbound || 0) + " inbound, " +
          (network.outbound || 0) + " outbound)."
    const traffic = $("status-traffic");
    traffic.textContent =
      "Since it started, the node sent " + size(network.bytes_sent || 0) + " and received " +
      size(network.bytes_received || 0) + "."
    traffic.dataset.received = String(network.bytes_received || 0);
    const peers = $("status-peers");
    clear(peers);
    for (const peer of status.connections) {
      peers.append(
        el("li", {}, el("strong", {}, state.names[peer] || "unnamed peer"), " ", el("span", { class: "id muted" }, peer)),
      );
    }
    const dht = status.dht;
    const own = dht && dht.own_record;
    $("status-dht").textContent = dht
      ? plural(dht.routing_table, "contact") + " in the routing table (" + plural(dht.buckets, "bucket") + "); " +
        plural(dht.records, "peer record") + " held for others; " +
        (!own
          ? "this node's own record is not published yet."
          : own.stored_at
            ? "this node's own record is stored at " + plural(own.stored_at, "node") + "."
            : "no other node holds this node's own record yet.")
      : "This node runs without a DHT.";
    const tor = (status.bootstrap || {}).tor;
    const torBar = $("status-tor-progress");
    $("status-tor").textContent = tor
      ? "Tor is " + tor.state +
        (tor.progress === null ? "" : ", " + tor.progress + "% bootstrapped") +
        (tor.summary || tor.tag ? " (" + (tor.summary || tor.tag) + ")" : "") +
        (tor.complaint && tor.state !== "ready" ? "; tor says: " + tor.complaint : "") + "."
      : "This node does not use tor.";
    torBar.hidden = !tor || tor.progress === null;
    if (tor && tor.progress !== null) torBar.value = tor.progress;
    const caught = status.catch_up;
    $("status-catch-up").textContent = caught
      ? "Caught up " + plural(caught.messages, "message") + " in " + plural(caught.groups, "group") +
        " since it started" +
        (caught.incomplete.length ? "; " + plural(caught.incomplete.length, "group") + " not whole (see dspring status --json)." : ".")
      : "This node has no groups.";
    const warnings = $("status-warnings");
    clear(warnings);
    for (const warning of status.warnings) warnings.append(el("li", {}, warning));
    if (!status.warnings.length) warnings.append(el("li", { class: "muted" }, "None."));
    const updated = $("status-updated");
    updated.textContent = "Updated at " + new Date().toLocaleTimeString() + "; it refreshes every " + STATUS_EVERY / 1000 + " s.";
    updated.dataset.count = String(Number(updated.dataset.count || 0) + 1);
  },
};

// --- messages -------------------------------------------------------------

function messageItem(message, delivery) {
  const from = message.outgoing ? "you" : message.sender_name || nameOf(message.sender);
  const item = el(
    "li",
    { class: message.outgoing ? "outgoing" : "incoming", "data-index": message.epoch + "/" + message.index },
    el("div", { class: "muted" }, from + " · " + shortTime(message.sent_at)),
  );
  if (message.type === "file") {
    const query = new URLSearchParams({ group: message.group, epoch: message.epoch, index: message.index });
    item.append(
      el(
        "p",
        {},
        "File: ",
        el("a", { href: "/api/file?" + query, download: "", class: "file" }, message.file_name),
        " (" + size(message.size) + ")",
      ),
    );
  } else if (message.text !== undefined) {
    item.append(el("p", { class: "text" }, message.text));
  } else {
    item.append(el("p", { class: "muted" }, "A long text (" + size(message.size) + "): see dspring inbox."));
  }
  if (delivery) {
    const list = el("ul", { class: "delivery", "aria-label": "Delivery" });
    item.append(list);
    state.deliveries[delivery.group + "/" + delivery.epoch + "/" + delivery.index] = list;
    showDelivery(delivery);
  }
  return item;
}

function showDelivery(delivery) {
  const list = state.deliveries[delivery.group + "/" + delivery.epoch + "/" + delivery.index];
  if (!list) return;
  clear(list);
  const peers = [...new Set([...delivery.committed, ...delivery.pending])].sort();
  for (const peer of peers) {
    const done = delivery.committed.includes(peer);
    const unreached = !done && delivery.unreached.includes(peer);
    const mailbox = delivery.mailboxes.includes(peer);
    const label = done
      ? mailbox ? "✓ holds it" : "✓ delivered"
      : unreached
        ? "away: it gets it when back"
        : "sending…";
    const item = el(
      "li",
      { "data-peer": peer, class: "state-" + (done ? "delivered" : unreached ? "unreached" : "sending") },
      el("span", {}, nameOf(peer) + (mailbox ? " (mailbox)" : "") + ": " + label),
    );
    // The owner knows when a member has a message (its acknowledgement),
    // not how much of it the member holds: most fragments come from other
    // members. So no bar pretends to count them.
    if (!done && !unreached) {
      item.append(el("progress", { "aria-label": "Sending to " + nameOf(peer) }));
    }
    list.append(item);
  }
}

function addMessage(message, delivery) {
  if (!state.group || state.page !== "group" || message.group !== state.group.group) return;
  const none = $("no-messages");
  if (none) none.remove();
  const key = message.group + "/" + message.epoch + "/" + message.index;
  const arriving = state.arriving[key];
  delete state.arriving[key];
  const item = messageItem(message, delivery);
  if (arriving) arriving.replaceWith(item);
  else $("messages").append(item);
}

// A message arriving here, as this node counts its fragments.
function showArriving(arrival) {
  if (!state.group || state.page !== "group" || arrival.group !== state.group.group) return;
  if (state.group.role === "owner") return;
  const key = arrival.group + "/" + arrival.epoch + "/" + arrival.index;
  let item = state.arriving[key];
  if (!item) {
    // A message of one fragment, or one just whole, is shown as itself
    // in a moment (its "message" event).
    if (arrival.fragments >= arrival.total) return;
    if (document.querySelector('#messages [data-index="' + arrival.epoch + "/" + arrival.index + '"]')) return;
    const none = $("no-messages");
    if (none) none.remove();
    item = state.arriving[key] = el(
      "li",
      { class: "incoming receiving", "data-index": arrival.epoch + "/" + arrival.index },
      el("div", { class: "muted" }, nameOf(state.group.owner) + " · arriving"),
      el(
        "p",
        {},
        el("span", { class: "count" }),
        " ",
        el("progress", {
          max: String(arrival.total),
          value: String(arrival.fragments),
          "aria-label": "Receiving message " + arrival.index,
        }),
      ),
    );
    $("messages").append(item);
  }
  item.querySelector(".count").textContent =
    "Receiving: " + arrival.fragments + " of " + plural(arrival.total, "fragment");
  const bar = item.querySelector("progress");
  bar.max = arrival.total;
  bar.value = arrival.fragments;
}

function sentMessage(delivery, fields) {
  return Object.assign(
    {
      group: delivery.group,
      epoch: delivery.epoch,
      index: delivery.index,
      outgoing: true,
      sent_at: Date.now() / 1000,
    },
    fields,
  );
}

function listen() {
  if (state.events) return;
  const events = (state.events = new EventSource("/api/events"));
  events.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    addMessage(message);
    if (state.page !== "group" || !state.group || state.group.group !== message.group) {
      say("New message in " + (message.group_name || message.proposed_name) + ".");
    }
  });
  events.addEventListener("delivery", (event) => showDelivery(JSON.parse(event.data)));
  events.addEventListener("receiving", (event) => showArriving(JSON.parse(event.data)));
}

// --- forms ----------------------------------------------------------------

async function act(work) {
  try {
    $("error").textContent = "";
    await work();
  } catch (error) {
    if (error instanceof NotLoggedIn) showLogin();
    else fail(error);
  }
}

function onSubmit(id, work) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => work(event.target));
  });
}

function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    const query = new URLSearchParams({ to: state.group.group, name: file.name });
    request.open("POST", "/api/send-file?" + query);
    request.setRequestHeader("x-csrf-token", state.csrf);
    request.setRequestHeader("content-type", "application/octet-stream");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      let answer = {};
      try {
        answer = JSON.parse(request.responseText);
      } catch (error) {
        answer = { error: "HTTP " + request.status };
      }
      if (request.status === 200) resolve(answer);
      else reject(new Error(answer.error || "HTTP " + request.status));
    });
    request.addEventListener("error", () => reject(new Error("the upload failed")));
    request.send(file);
  });
}

function setUpForms() {
  onSubmit("contact-add", async (form) => {
    const contact = await api("contacts-add", { contact: form.contact.value, name: form.name.value });
    form.reset();
    say("Added " + (contact.name || contact.peer) + ".");
    await pages.contacts();
  });
  onSubmit("group-create", async (form) => {
    const created = await api("group-create", { name: form.name.value });
    form.reset();
    location.hash = "#group/" + created.group;
  });
  onSubmit("member-add", async (form) => {
    const added = await api("group-add", {
      group: state.group.group,
      peer: form.peer.value,
      role: form.role.value,
    });
    form.reset();
    say("Invited " + nameOf(added.peer) + " as " + added.role + ".");
    await pages.group(state.group.group);
    $("members-box").open = true;
  });
  onSubmit("send-text", async (form) => {
    const text = form.text.value;
    const delivery = await api("send", { to: state.group.group, text: text });
    form.reset();
    addMessage(sentMessage(delivery, { type: "text", text: text, size: text.length }), delivery);
  });
  onSubmit("send-file", async (form) => {
    const file = form.file.files[0];
    const box = $("upload");
    const bar = $("upload-progress");
    const text = $("upload-text");
    const button = form.querySelector("button");
    const shown = (done) => {
      bar.value = Math.round(done * 100);
      text.textContent = "Uploading " + file.name + " to your node: " + bar.value + "% of " + size(file.size);
    };
    box.hidden = false;
    button.disabled = true;
    shown(0);
    try {
      const delivery = await upload(file, shown);
      shown(1);
      form.reset();
      addMessage(sentMessage(delivery, { type: "file", file_name: file.name, size: file.size }), delivery);
    } finally {
      box.hidden = true;
      button.disabled = false;
    }
  });
  $("status-refresh").addEventListener("click", () => act(pages.status));
  document.addEventListener("visibilitychange", watchStatus);
}

// --- navigation -----------------------------------------------------------

function showLogin() {
  state.page = "login";
  watchStatus();
  for (const section of document.querySelectorAll("main > section")) section.hidden = true;
  $("page-login").hidden = false;
  document.querySelector("nav").hidden = true;
}

// A page the user went to (not the first one loaded): focus its heading,
// so that a screen reader says where they are and Tab goes on from there.
async function navigate() {
  await route();
  const section = document.querySelector("main > section:not([hidden])");
  const heading = section && section.querySelector("h2");
  if (heading) heading.focus();
}

async function route() {
  const hash = location.hash.slice(1) || "identity";
  const [page, argument] = hash.split("/");
  if (!(page in pages)) {
    location.hash = "#identity";
    return;
  }
  state.page = page;
  if (page !== "group") state.group = null;
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== "page-" + page;
  }
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.page === page || (page === "group" && link.dataset.page === "groups");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("notice").textContent = "";
  await act(() => pages[page](argument));
  watchStatus();
  document.body.dataset.loaded = hash;
}

// While the status page is shown (and the tab visible), ask the node
// again every STATUS_EVERY milliseconds.
function watchStatus() {
  clearTimeout(state.statusTimer);
  state.statusTimer = null;
  if (state.page !== "status" || document.hidden) return;
  state.statusTimer = setTimeout(async () => {
    await act(pages.status);
    watchStatus();
  }, STATUS_EVERY);
}

async function start() {
  try {
    const session = await api("session");
    state.csrf = session.csrf;
  } catch (error) {
    showLogin();
    document.body.dataset.loaded = "login";
    return;
  }
  setUpForms();
  listen();
  window.addEventListener("hashchange", navigate);
  await route();
}

document.addEventListener("DOMContentLoaded", start);
