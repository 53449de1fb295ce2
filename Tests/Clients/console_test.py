"""The web console in headless Chromium: sign in, every node on the overview, a query and its plan,
the shard map of a sharded database, users, live charts; a screenshot of each step.
Then, on a node without auth (OPEN_URL), the overview with no sign-in.
Usage: python console_test.py URL USER PASSWORD NODES SHARDS ROWS SCREENSHOT_DIR OPEN_URL. Prints OK or fails."""
import sys

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

url, user, password, nodes, shards, rows, shots, open_url = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], sys.argv[8]
options = Options()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
    options.add_argument(flag)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
# The console re-renders its lists as it refreshes: an element found a moment ago may be gone, and
# is looked up again rather than failing the test.
wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
css = lambda selector: driver.find_elements(By.CSS_SELECTOR, selector)


def texts(selector):
    """The texts of `selector`'s elements, read again (by `wait`, which ignores stale elements) when a
    refresh replaced one while they were read. In a tuple: an empty list would make `wait` go on."""
    return wait.until(lambda d: ([e.text for e in css(selector)],))[0]


def click_button(selector, text):
    """Clicks the element among `selector`'s whose text is `text`, finding it again if a refresh replaced it."""
    def attempt(_):
        for b in css(selector):
            if b.text == text:
                b.click()
                return True
        return False
    wait.until(attempt)

try:
    driver.get(url + "/console")
    wait.until(EC.visibility_of_element_located((By.ID, "signin")))
    driver.save_screenshot(shots + "/1-sign-in.png")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys("wrong-password")
    driver.find_element(By.ID, "signin-button").click()
    wait.until(lambda d: d.find_element(By.ID, "signin-error").text != "")
    driver.find_element(By.ID, "password").send_keys(Keys.CONTROL, "a")
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "signin-button").click()

    # Every node, live, with its replicas and leaders.
    wait.until(lambda d: len(css("#nodes tbody tr")) == nodes)
    states = texts("#nodes tbody tr td:nth-child(4)")
    assert states == ["live"] * nodes, states
    assert sum(int(t) for t in texts("#nodes tbody tr td:nth-child(7)")) >= 1, "no leaders shown"
    # Every node's storage and apply lag, asked of each node.
    wait.until(lambda d: all(e.text.endswith(" MiB") for e in css("#nodes tbody tr td:nth-child(8)")))
    lags = texts("#nodes tbody tr td:nth-child(9)")
    assert all(t.isdigit() for t in lags), lags
    wait.until(lambda d: len(css("#groups tbody tr")) >= 1)
    driver.save_screenshot(shots + "/2-overview.png")

    # A query on the sharded database, its result and its plan.
    css("#tabs [data-tab=sql]")[0].click()
    wait.until(lambda d: "shop" in [o.text for o in css("#sql-db option")])
    Select(driver.find_element(By.ID, "sql-db")).select_by_visible_text("shop")
    text = driver.find_element(By.ID, "sql-text")
    text.clear()
    text.send_keys("SELECT count(*) AS n FROM orders")
    driver.find_element(By.ID, "run").click()
    wait.until(lambda d: len(css("#sql-out table.result td")) == 1)
    assert css("#sql-out table.result td")[0].text == str(rows), css("#sql-out")[0].text
    assert "ms" in driver.find_element(By.ID, "sql-status").text
    driver.find_element(By.ID, "plan").click()
    wait.until(lambda d: d.find_element(By.ID, "sql-plan").is_displayed())
    assert "shard" in driver.find_element(By.ID, "sql-plan").text, driver.find_element(By.ID, "sql-plan").text
    assert "SELECT count(*) AS n FROM orders" in texts("#history li")
    driver.save_screenshot(shots + "/3-sql.png")

    # The shard map: one arc of the ring per shard, each shard's leader and replicas.
    css("#tabs [data-tab=databases]")[0].click()
    click_button("#database-list button", "shop")
    wait.until(lambda d: len(css("#ring path.arc")) == shards)
    assert len(css("#shards tbody tr")) == shards
    assert any("orders" in t for t in texts("#schema tbody td")), "the schema browser does not list orders"
    driver.save_screenshot(shots + "/4-shards.png")

    # Users and grants.
    css("#tabs [data-tab=users]")[0].click()
    wait.until(lambda d: any(e.text == "admin" for e in css("#user-table tbody td")))

    # Live charts: the load below shows as writes.
    css("#tabs [data-tab=charts]")[0].click()
    for i in range(40):
        driver.execute_script("fetch('/v1/db/shop/execute', {method: 'POST', headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + sessionStorage.getItem('cairn-token')}, body: JSON.stringify({statements: [['INSERT INTO orders VALUES (?, ?, ?)', 1000 + arguments[0], 1, 'x']]})})", i)
    wait.until(lambda d: d.execute_script("return state.samples.filter(s => s.point && s.point.writes > 0).length") >= 1)
    driver.save_screenshot(shots + "/5-charts.png")
    # The expected failures: the anonymous probe that finds auth on, and the wrong password (401s).
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
              and not (("/v1/cluster " in e["message"] or "/v1/auth/token " in e["message"]) and "status of 401" in e["message"])]
    assert not errors, errors

    # Without auth: straight to the overview, the sign-in form never shown.
    driver.get(open_url + "/console")
    wait.until(lambda d: len(css("#nodes tbody tr")) == 1)
    assert not driver.find_element(By.ID, "signin").is_displayed()
    assert "no authentication" in driver.find_element(By.ID, "who").text
    driver.save_screenshot(shots + "/6-no-auth.png")
    print("OK")
finally:
    driver.quit()
