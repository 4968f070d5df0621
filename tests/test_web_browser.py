"""
The web client in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver (nothing downloads a browser),
against two real ``twistd -n dspring --web`` processes.

Screenshots of every page go to ``$DSPRING_SCREENSHOTS``, else to
``web-screenshots`` in trial's working directory (``_trial_temp``); the
test prints where.
"""

from __future__ import annotations

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
            "--window-size=420,900",
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
        driver.save_screenshot(self.shots.child(f"{name}.png").path)

    def fill(self, driver: Any, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(text)

    def test_two_nodes_in_a_browser(self) -> None:
        """
        A and B each log in through a one-time URL. B adds A as a contact
        (so it takes A's invitations unasked), A adds B, creates a group,
        adds B, and sends a text and an HTML file with a script while B
        looks at the group: both appear there live, the text as text, the
        file as a link whose download never runs (the browser saves it
        and stays on the page, and the script leaves no mark in the
        client's origin).  Requests without the cookie, with a foreign
        Host or Origin, or without the CSRF token are refused.
        """
        from selenium.webdriver.common.by import By

        a, b = self.start("a"), self.start("b")
        a.wait_ready()
        b.wait_ready()
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
        self.shot(driver, "1-identity")
        b_tab = driver.current_window_handle
        self.page(driver, "#contacts")
        self.fill(driver, "contact-address", f"{a.peer_id}@{a.address}")
        self.fill(driver, "contact-name", "alice")
        driver.find_element(By.CSS_SELECTOR, "#contact-add button").click()
        self.wait(
            "alice in B's contacts",
            lambda: "alice" in driver.find_element(By.ID, "contacts-list").text,
        )
        self.shot(driver, "2-contacts")

        # The login URL worked once.
        driver.switch_to.new_window("tab")
        a_tab = driver.current_window_handle
        driver.get(login_b)
        self.assertIn("not valid", driver.find_element(By.TAG_NAME, "body").text)

        # A: contacts, a group with B.
        driver.get(login_a)
        self.wait("A's identity", lambda: driver.find_element(By.ID, "peer-id").text == a.peer_id)
        self.page(driver, "#contacts")
        self.fill(driver, "contact-address", f"{b.peer_id}@{b.address}")
        self.fill(driver, "contact-name", "bob")
        driver.find_element(By.CSS_SELECTOR, "#contact-add button").click()
        self.wait(
            "bob in A's contacts",
            lambda: "bob" in driver.find_element(By.ID, "contacts-list").text,
        )
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
        self.wait(
            "bob active in the group",
            lambda: any(
                m["status"] == "active"
                for m in json.loads(_ok(a.dspring("group", "show", "--json", group)))["members"]
            ),
            timeout=30,
        )

        # B: the group, open while A sends.
        driver.switch_to.window(b_tab)
        self.page(driver, "#groups")
        self.wait(
            "friends at B", lambda: "friends" in driver.find_element(By.ID, "groups-list").text
        )
        self.shot(driver, "3-groups")
        self.page(driver, f"#group/{group}")
        self.assertTrue(driver.find_element(By.ID, "send-box").get_attribute("hidden") is not None)

        # A sends a text and a file.
        driver.switch_to.window(a_tab)
        self.page(driver, f"#group/{group}")
        self.fill(driver, "text", EVIL_TEXT)
        driver.find_element(By.CSS_SELECTOR, "#send-text button").click()
        evil = self.workdir.child("evil.html")
        evil.setContent(EVIL_HTML)
        driver.find_element(By.ID, "file").send_keys(evil.path)
        driver.find_element(By.CSS_SELECTOR, "#send-file button").click()
        self.wait(
            "both delivered to bob",
            lambda: (
                len(driver.find_elements(By.CSS_SELECTOR, "#messages .delivery .state-delivered"))
                == 2
            ),
            timeout=30,
        )
        self.shot(driver, "4-conversation-sender")

        # B sees them, live.
        driver.switch_to.window(b_tab)
        texts = self.wait(
            "the text at B",
            lambda: driver.find_elements(By.CSS_SELECTOR, "#messages .text"),
        )
        self.assertEqual(texts[0].text, EVIL_TEXT)
        self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#messages img, #messages b"), [])
        link = self.wait(
            "the file at B", lambda: driver.find_element(By.CSS_SELECTOR, "#messages a.file")
        )
        self.assertEqual(link.text, "evil.html")
        self.shot(driver, "5-conversation-receiver")

        # The file: a download, never a page of the client.
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

        self.page(driver, "#status")
        self.wait(
            "B's status",
            lambda: "connected" in driver.find_element(By.ID, "status-connections").text,
        )
        self.assertIn(a.peer_id, driver.find_element(By.ID, "status-peers").text)
        self.shot(driver, "6-status")

        self.check_refusals(b, driver, href)

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
