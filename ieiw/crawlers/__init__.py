"""The photoshop-request crawl: polite HTTP, Reddit API / dumps / HTML sources, validated web pairs.

Entry point for the build flow: :class:`ieiw.crawlers.builder.WebCrawlBuilder` with a
:class:`ieiw.crawlers.config.CrawlConfig`. Heavy imports (requests, cv2, bs4) live in the modules.
"""
