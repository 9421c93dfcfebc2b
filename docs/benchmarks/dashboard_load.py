#!/usr/bin/env python3
"""Loads the dashboard in headless chromium six times over WebDriver and prints when each load first showed
everything (window.firstRenderMs); writes a screenshot of the last one. Needs chromium, chromedriver and a mesh
on 127.0.0.1:5003. Usage: python3 docs/benchmarks/dashboard_load.py screenshot.png"""
import json, subprocess, time, urllib.request, base64, sys
def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))["value"]
drv = subprocess.Popen(["chromedriver", "--port=9515"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
base = "http://127.0.0.1:9515"
sess = call("POST", base + "/session", {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
    "binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1500"]}}}})["sessionId"]
s = f"{base}/session/{sess}"
results = []
for i in range(6):
    call("POST", s + "/url", {"url": "http://127.0.0.1:5003/dashboard?stuckAfterSeconds=300"})
    for _ in range(100):
        v = call("POST", s + "/execute/sync", {"script": "return window.firstRenderMs === undefined ? null : [window.firstRenderMs, performance.timing.navigationStart]", "args": []})
        if v is not None: break
        time.sleep(0.05)
    results.append(round(v[0]))
print("first full render (ms after navigation start), 6 loads:", results)
time.sleep(2.5)
png = call("GET", s + "/screenshot")
open(sys.argv[1], "wb").write(base64.b64decode(png))
call("DELETE", s)
drv.terminate()
