"""
The web client in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver (nothing downloads a browser),
against two real ``twistd -n dspring --web`` processes.

Screenshots of every page, whole (not only what the window shows), at a
desktop size and at a phone's (390 x 844 CSS pixels, ``phone-*.png``), go to
``$DSPRING_SCREENSHOTS``, else to ``web-screenshots`` in trial's working
directory (``_trial_temp``); the test prints where.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, TestCase

from ._nodes import NodeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WEB = "tcp:0:interface=127.0.0.1"

#: The file uploaded with the network slowed, to see the upload's bar move.
BIG_FILE_SIZE = 2 * 1024 * 1024

#: Bytes a second the browser uploads at while the big file goes.
SLOW_UPLOAD = 800_000

#: The roles of the accessibility tree that must have a name: what a
#: keyboard or screen-reader user operates or is told of.
NAMED_ROLES = frozenset(
    {
        "button",
        "link",
        "textbox",
        "combobox",
        "checkbox",
        "radio",
        "progressbar",
        "DisclosureTriangle",
        "image",
        "img",
    }
)

#: The elements a keyboard user can reach with Tab, shown and enabled.
FOCUSABLE = """
return [...document.querySelectorAll(
  'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])'
)].filter((e) => !e.disabled && e.getClientRects().length > 0 &&
  getComputedStyle(e).visibility !== 'hidden');
"""

#: Records every value the upload's bar takes, and when it is shown.
WATCH_UPLOAD = """
const bar = document.getElementById('upload-progress');
const box = document.getElementById('upload');
window.uploadSeen = [];
new MutationObserver(() => window.uploadSeen.push([box.hidden, Number(bar.value)]))
  .observe(bar, {attributes: true});
new MutationObserver(() => window.uploadSeen.push([box.hidden, Number(bar.value)]))
  .observe(box, {attributes: true});
"""

#: Records each count of fragments a message arriving shows.
WATCH_ARRIVING = """
window.arrivingSeen = [];
new MutationObserver(() => {
  for (const bar of document.querySelectorAll('#messages .receiving progress')) {
    window.arrivingSeen.push([Number(bar.value), Number(bar.max)]);
  }
}).observe(document.getElementById('messages'), {subtree: true, childList: true,
  attributes: true, characterData: true});
"""
#: A file whose script, were it ever run in the client's origin, would
#: leave a mark there (and change the page's title).
EVIL_HTML = (
    b"<!doctype html><title>evil</title><script>"
    b"localStorage.setItem('pwned', 'by a file'); document.title = 'PWNED';"
    b"</script><p>hello from a peer</p>\n"
)

#: A text a peer sends that would run a script if it were read as HTML.
EVIL_TEXT = (
    "hello bob <img src=x onerror=\"localStorage.setItem('pwned','by a text')\"> <b>bold?</b>"
)


def _browser_missing() -> str | None:
    """
    Why the browser test cannot run here, or ``None`` when it can.
    """
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    return None


def _ok(result: Any) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return str(result.stdout)


class WebBrowserTests(TestCase):
    """
    Two nodes, each with its web client, used from one browser.
    """

    def setUp(self) -> None:
        missing = _browser_missing()
        if missing is not None:
            if os.environ.get("CI") == "true":
                self.fail(f"the browser test must run in CI: {missing}")
            raise SkipTest(missing)
        self.workdir = FilePath(self.mktemp())
        self.workdir.makedirs()
        self.downloads = self.workdir.child("downloads")
        self.downloads.makedirs()
        self.shots = FilePath(
            os.environ.get("DSPRING_SCREENSHOTS") or os.path.abspath("web-screenshots")
        )
        if self.shots.exists():
            shutil.rmtree(self.shots.path)
        self.shots.makedirs()
        print(f"\nscreenshots of the web client: {self.shots.path}")

    def start(self, name: str) -> NodeProcess:
        node = NodeProcess(self.workdir, name, "--web", WEB)
        self.addCleanup(node.stop)
        return node

    def browser(self) -> Any:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1100,900",
        ):
            options.add_argument(argument)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": self.downloads.path,
                "download.prompt_for_download": False,
            },
        )
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.addCleanup(driver.quit)
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": self.downloads.path},
        )
        return driver

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = check()
            except Exception as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what}: {e!r}") from e
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def page(self, driver: Any, hash_: str) -> None:
        """
        Go to a page of the client and wait until it has loaded.
        """
        if driver.execute_script("return location.hash") == hash_:
            # Setting the hash it has would load nothing.
            self.page(driver, "#identity")
        driver.execute_script(
            "document.body.dataset.loaded = ''; location.hash = arguments[0]", hash_
        )
        self.wait(
            f"page {hash_}",
            lambda: driver.execute_script("return document.body.dataset.loaded") == hash_[1:],
        )

    def shot(self, driver: Any, name: str) -> None:
        """
        Save a screenshot of the whole page, not only what the window shows.
        """
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        taken = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        self.shots.child(f"{name}.png").setContent(base64.b64decode(taken["data"]))

    def phone(self, driver: Any, on: bool) -> None:
        """
        Show the pages as a phone does (390 x 844 CSS pixels, touch, twice
        the pixels), or as the desktop window again.
        """
        if on:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
            )
        else:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def check_accessible(self, driver: Any, where: str) -> None:
        """
        On the page shown: every control, link, image and progress bar in
        Chromium's accessibility tree has a name (a label, its text, an
        ``alt`` or ``aria-label``), and Tab alone reaches every control
        shown, in turn.
        """
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        driver.execute_cdp_cmd("Accessibility.enable", {})
        nodes = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
        unnamed = [
            node["role"]["value"]
            for node in nodes
            if not node.get("ignored")
            and node.get("role", {}).get("value") in NAMED_ROLES
            and not str(node.get("name", {}).get("value", "")).strip()
        ]
        self.assertEqual(unnamed, [], f"{where}: controls without a name")
        expected = driver.execute_script(FOCUSABLE)
        self.assertTrue(expected, where)
        # From the first (the skip link), as after loading the page.
        driver.execute_script("arguments[0].focus()", expected[0])
        reached = {0}
        for _ in range(len(expected) + 2):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            reached.add(
                driver.execute_script(
                    f"const all = (() => {{{FOCUSABLE}}})();"
                    " return all.indexOf(document.activeElement);"
                )
            )
        missed = [
            driver.execute_script(
                "const e = arguments[0]; return e.tagName + '#' + e.id + ' ' + "
                "(e.getAttribute('aria-label') || e.textContent.trim().slice(0, 30))",
                element,
            )
            for number, element in enumerate(expected)
            if number not in reached
        ]
        self.assertEqual(missed, [], f"{where}: controls Tab does not reach")
        driver.execute_script("document.activeElement.blur()")
        self.assertLessEqual(
            driver.execute_script("return document.documentElement.scrollWidth"),
            driver.execute_script("return window.innerWidth"),
            f"{where}: wider than the window",
        )

    def fill(self, driver: Any, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(text)

    def test_two_nodes_in_a_browser(self) -> None:
        """
        A and B each log in through a one-time URL. B adds A as a contact
        (so it takes A's invitations unasked), A adds B and a mailbox node,
        creates a group, adds B, and adds the mailbox with the keyboard
        alone.  A sends a text, an HTML file with a script, and a 2 MiB
        file over a slowed link, its upload's bar rising as it goes, while
        B looks at the group: all appear there live (the big file counted
        in as its fragments arrive), the text as text, the HTML file as a
        link whose download never runs (the browser saves it and stays on
        the page, and the script leaves no mark in the client's origin).
        B's status page follows the node without being reloaded.  Every
        page names each of its controls and Tab reaches them all, at a
        desktop's size and a phone's, which is no wider than the phone.
        Requests without the cookie, with a foreign Host or Origin, or
        without the CSRF token are refused.
        """
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        a, b = self.start("a"), self.start("b")
        box = NodeProcess(self.workdir, "box", "--mailbox")
        self.addCleanup(box.stop)
        for node in (a, b, box):
            node.wait_ready()
        login_a = _ok(a.dspring("web")).strip()
        login_b = _ok(b.dspring("web")).strip()
        self.assertRegex(login_a, r"\Ahttp://127\.0\.0\.1:\d+/login\?token=[\w-]{20,}\Z")
        driver = self.browser()

        # B: identity and contacts.
        driver.get(login_b)
        self.wait("B's identity", lambda: driver.find_element(By.ID, "peer-id").text)
        self.assertEqual(driver.find_element(By.ID, "peer-id").text, b.peer_id)
        shared = driver.find_element(By.ID, "shareable").text
        self.assertIn(f"{b.peer_id}@{b.address}", shared)
        self.wait(
            "the QR code",
            lambda: driver.execute_script(
                "const i = document.getElementById('qr'); return i.complete && i.naturalWidth > 0"
            ),
        )
        self.check_accessible(driver, "identity")
        self.shot(driver, "1-identity")
        b_tab = driver.current_window_handle
        self.page(driver, "#contacts")
        self.add_contact(driver, a, "alice")
        self.check_accessible(driver, "contacts")
        self.shot(driver, "2-contacts")

        # The login URL worked once.
        driver.switch_to.new_window("tab")
        a_tab = driver.current_window_handle
        driver.get(login_b)
        self.assertIn("not valid", driver.find_element(By.TAG_NAME, "body").text)

        # A: contacts, a group with B and the mailbox.
        driver.get(login_a)
        self.wait("A's identity", lambda: driver.find_element(By.ID, "peer-id").text == a.peer_id)
        self.page(driver, "#contacts")
        self.add_contact(driver, b, "bob")
        self.add_contact(driver, box, "box")
        self.page(driver, "#groups")
        self.fill(driver, "group-name", "friends")
        driver.find_element(By.CSS_SELECTOR, "#group-create button").click()
        match = self.wait(
            "the new group's page",
            lambda: re.fullmatch(r".*#group/([0-9a-f]{64})", driver.current_url),
        )
        group = match.group(1)
        self.wait(
            "the group page", lambda: driver.find_element(By.ID, "group-title").text == "friends"
        )
        driver.find_element(By.CSS_SELECTOR, "#members-box summary").click()
        self.fill(driver, "member-peer", "bob")
        driver.find_element(By.CSS_SELECTOR, "#member-add button").click()
        self.wait("bob invited", lambda: "bob" in driver.find_element(By.ID, "members").text)
        # The mailbox, with the keyboard alone: type its name, Tab to the
        # role, choose mailbox, Tab to the button and press Enter.
        driver.find_element(By.ID, "member-peer").click()
        keys = ActionChains(driver).send_keys("box", Keys.TAB, Keys.ARROW_DOWN)
        keys.send_keys(Keys.TAB, Keys.ENTER).perform()
        self.wait(
            "box added as a mailbox",
            lambda: (
                "mailbox"
                in driver.find_element(
                    By.CSS_SELECTOR, f'#members [data-peer="{box.peer_id}"]'
                ).text
            ),
        )

        def statuses() -> dict[str, tuple[str, str]]:
            shown = json.loads(_ok(a.dspring("group", "show", "--json", group)))
            return {m["peer"]: (m["role"], m["status"]) for m in shown["members"]}

        self.wait(
            "bob and box active in the group",
            lambda: (
                statuses() == {b.peer_id: ("member", "active"), box.peer_id: ("mailbox", "active")}
            ),
            timeout=30,
        )

        # B: the group, open while A sends.
        driver.switch_to.window(b_tab)
        self.page(driver, "#groups")
        self.wait(
            "friends at B", lambda: "friends" in driver.find_element(By.ID, "groups-list").text
        )
        self.check_accessible(driver, "groups")
        self.shot(driver, "3-groups")
        self.page(driver, f"#group/{group}")
        self.assertTrue(driver.find_element(By.ID, "send-box").get_attribute("hidden") is not None)
        driver.execute_script(WATCH_ARRIVING)

        # A sends a text and two files, the second over a slow link.
        driver.switch_to.window(a_tab)
        self.page(driver, f"#group/{group}")
        self.assertEqual(driver.find_element(By.ID, "members-box").get_attribute("open"), "true")
        self.check_accessible(driver, "a group, at its owner")
        self.fill(driver, "text", EVIL_TEXT)
        driver.find_element(By.CSS_SELECTOR, "#send-text button").click()
        evil = self.workdir.child("evil.html")
        evil.setContent(EVIL_HTML)
        driver.find_element(By.ID, "file").send_keys(evil.path)
        driver.find_element(By.CSS_SELECTOR, "#send-file button").click()
        self.wait_delivered(driver, 2)
        big = self.workdir.child("photos.bin")
        big.setContent(os.urandom(BIG_FILE_SIZE))
        driver.execute_script(WATCH_UPLOAD)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": SLOW_UPLOAD,
            },
        )
        driver.find_element(By.ID, "file").send_keys(big.path)
        driver.find_element(By.CSS_SELECTOR, "#send-file button").click()
        self.wait(
            "the upload under way",
            lambda: (
                20
                <= driver.execute_script("return document.getElementById('upload-progress').value")
                < 90
            ),
        )
        self.shot(driver, "4-uploading")
        self.wait_delivered(driver, 3)
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        seen = driver.execute_script("return window.uploadSeen")
        shown = [value for hidden, value in seen if not hidden]
        self.assertEqual(shown, sorted(shown), seen)
        self.assertGreaterEqual(len({v for v in shown if 0 < v < 100}), 3, seen)
        self.assertEqual((shown[-1], seen[-1][0]), (100, True), seen)
        self.shot(driver, "5-conversation-sender")

        # B sees them, live.
        driver.switch_to.window(b_tab)
        texts = self.wait(
            "the text at B",
            lambda: driver.find_elements(By.CSS_SELECTOR, "#messages .text"),
        )
        self.assertEqual(texts[0].text, EVIL_TEXT)
        self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#messages img, #messages b"), [])
        links = self.wait(
            "the files at B",
            lambda: (
                len(driver.find_elements(By.CSS_SELECTOR, "#messages a.file")) == 2
                and driver.find_elements(By.CSS_SELECTOR, "#messages a.file")
            ),
        )
        self.assertEqual([link.text for link in links], ["evil.html", "photos.bin"])
        self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#messages .receiving"), [])
        arriving = driver.execute_script("return window.arrivingSeen")
        self.assertTrue(arriving, "the big file was not shown arriving")
        self.assertEqual({total for _, total in arriving}, {34}, arriving)
        counts = [count for count, _ in arriving]
        self.assertEqual(counts, sorted(counts), arriving)
        self.check_accessible(driver, "a group, at a member")
        self.shot(driver, "6-conversation-receiver")

        # The file: a download, never a page of the client.
        link = links[0]
        conversation = driver.current_url
        href = link.get_attribute("href")
        link.click()
        saved = self.downloads.child("evil.html")
        self.wait("the download", lambda: saved.exists() and saved.getContent() == EVIL_HTML)
        driver.get(href)
        time.sleep(0.5)
        self.assertEqual(driver.current_url, conversation)
        self.assertEqual(driver.title, "Digital Spring")
        self.assertIsNone(driver.execute_script("return localStorage.getItem('pwned')"))

        # B's status page follows the node: A's next message shows in its
        # byte count with no reload.
        self.page(driver, "#status")
        self.wait(
            "B's status",
            lambda: "connected" in driver.find_element(By.ID, "status-connections").text,
        )
        self.assertIn(a.peer_id, driver.find_element(By.ID, "status-peers").text)
        self.assertIn("alice", driver.find_element(By.ID, "status-peers").text)

        def received() -> int:
            return int(driver.find_element(By.ID, "status-traffic").get_attribute("data-received"))

        before = received()
        notes = self.workdir.child("notes.txt")
        notes.setContent(b"minutes of the meeting\n" * 1000)
        _ok(a.dspring("send", group, "--file", notes.path))
        self.wait("the status page refreshed", lambda: received() > before + 20_000, timeout=15)
        self.assertEqual(driver.execute_script("return document.body.dataset.loaded"), "status")
        self.check_accessible(driver, "status")
        self.shot(driver, "7-status")

        # At a phone's size.
        for tab, pages in (
            (b_tab, ["#identity", "#contacts", "#groups", "#status"]),
            (a_tab, [f"#group/{group}"]),
        ):
            driver.switch_to.window(tab)
            self.phone(driver, True)
            for hash_ in pages:
                self.page(driver, hash_)
                self.check_accessible(driver, f"{hash_} on a phone")
                self.shot(driver, "phone-" + hash_[1:].split("/")[0])
            self.phone(driver, False)

        self.check_refusals(b, driver, href)

    def add_contact(self, driver: Any, node: NodeProcess, name: str) -> None:
        from selenium.webdriver.common.by import By

        self.fill(driver, "contact-address", f"{node.peer_id}@{node.address}")
        self.fill(driver, "contact-name", name)
        driver.find_element(By.CSS_SELECTOR, "#contact-add button").click()
        self.wait(
            f"{name} in the contacts",
            lambda: driver.find_elements(
                By.CSS_SELECTOR, f'#contacts-list [data-peer="{node.peer_id}"]'
            ),
        )

    def wait_delivered(self, driver: Any, count: int) -> None:
        """
        Wait until the sender's page shows ``count`` messages delivered to
        bob and held by the mailbox.
        """
        from selenium.webdriver.common.by import By

        self.wait(
            f"{count} messages delivered",
            lambda: (
                len(driver.find_elements(By.CSS_SELECTOR, "#messages .delivery .state-delivered"))
                == 2 * count
            ),
            timeout=30,
        )

    def check_refusals(self, node: NodeProcess, driver: Any, file_url: str) -> None:
        """
        Without the cookie, with a foreign Host or Origin, or without the
        CSRF token, the client refuses; with them, it answers.
        """
        url = urlsplit(file_url)
        # Named after the port: browsers send a host's cookies to every port.
        cookie = driver.get_cookie(f"dspring-session-{url.port}")
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")
        jar = f"{cookie['name']}={cookie['value']}"
        origin = f"http://{url.netloc}"

        def ask(
            method: str, path: str, headers: dict[str, str], body: bytes | None = None
        ) -> tuple[int, dict[str, str], bytes]:
            connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
            try:
                connection.putrequest(method, path, skip_host=True)
                headers = {"Host": url.netloc, "Content-Length": str(len(body or b"")), **headers}
                for name, value in headers.items():
                    connection.putheader(name, value)
                connection.endheaders(body)
                response = connection.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            finally:
                connection.close()

        status, headers, body = ask("GET", "/api/session", {"Cookie": jar})
        self.assertEqual(status, 200)
        csrf = json.loads(body)["csrf"]
        file_path = f"{url.path}?{url.query}"
        status, headers, body = ask("GET", file_path, {"Cookie": jar})
        self.assertEqual((status, body), (200, EVIL_HTML))
        self.assertEqual(headers["Content-Type"], "application/octet-stream")
        self.assertTrue(headers["Content-Disposition"].startswith("attachment;"))
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        self.assertTrue(headers["Content-Security-Policy"].startswith("sandbox"))

        self.assertEqual(ask("GET", file_path, {})[0], 401)
        self.assertEqual(ask("GET", "/api/status", {})[0], 401)
        self.assertEqual(
            ask("GET", "/api/status", {"Cookie": jar, "Host": "evil.example"})[0], 403
        )
        self.assertEqual(
            ask("GET", "/api/status", {"Cookie": jar, "Host": f"evil.example:{url.port}"})[0], 403
        )
        post = {"Cookie": jar, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
        body = json.dumps({"name": "mallory"}).encode()
        self.assertEqual(
            ask("POST", "/api/group-create", {**post, "Origin": "http://evil.example"}, body)[0],
            403,
        )
        self.assertEqual(ask("POST", "/api/group-create", post, body)[0], 403)
        without_csrf = {"Cookie": jar, "Origin": origin, "Content-Type": "application/json"}
        self.assertEqual(ask("POST", "/api/group-create", without_csrf, body)[0], 403)
        accepted = ask("POST", "/api/group-create", {**post, "Origin": origin}, body)
        self.assertEqual(accepted[0], 200, accepted[2])
